package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/engine/store"
)

// TestRenewalCommands checks explain, revoke and daemon where no CA is
// needed: usage errors, an unusable renewal setting, and explain reading
// the storage while another process (a daemon) holds its lock.
func TestRenewalCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1/dir\"\n[plugins.w]\npath = \"/bin/true\"\n" +
		"[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\"]\nsolver = \"w\"\n"
	good := write("good.toml", base)
	badPolicy := write("policy.toml", base+"renew_before = \"soon\"\nmax_orders = 1000\n")
	badFraction := write("fraction.toml", base+"renew_before = \"150%\"\n")
	missingScript := write("script.toml", base+"scripts = [\"missing.lua\"]\n")

	locked, err := store.Open(filepath.Join(dir, "s"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer locked.Close()

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "explain beside the lock holder", args: []string{"--config", good, "explain", "www"}, code: exitOK, stdout: "no certificate issued yet"},
		{name: "explain without name", args: []string{"--config", good, "explain"}, code: exitUsage, stderr: "explain needs the name"},
		{name: "explain unknown name", args: []string{"--config", good, "explain", "nope"}, code: exitUsage, stderr: `"nope"`},
		{name: "list beside the lock holder", args: []string{"--config", good, "list"}, code: exitOK, stdout: "now (no certificate)"},
		{name: "revoke bad reason", args: []string{"--config", good, "revoke", "www", "--reason", "boredom"}, code: exitUsage, stderr: `unknown revocation reason "boredom"; use one of unspecified, keyCompromise`},
		{name: "revoke without name", args: []string{"--config", good, "revoke", "--reason", "superseded"}, code: exitUsage, stderr: "revoke needs the name"},
		{name: "revoke takes the lock", args: []string{"--config", good, "revoke", "www", "--reason", "keyCompromise", "--yes"}, code: exitFailed, stderr: "if acmehook daemon holds it, stop the daemon, run this command, and start it again"},
		{name: "daemon with arguments", args: []string{"--config", good, "daemon", "now"}, code: exitUsage, stderr: "daemon takes no arguments"},
		{name: "daemon takes the lock", args: []string{"--config", good, "daemon"}, code: exitFailed, stderr: "storage is locked by another process"},
		{name: "renewal settings checked", args: []string{"--config", badPolicy, "explain", "www"}, code: exitUsage, stderr: "policy.toml:11: certificate[0].max_orders: 1000 must be between 1 and 100"},
		{name: "renew_before checked", args: []string{"--config", badPolicy, "list"}, code: exitUsage, stderr: `policy.toml:10: certificate[0].renew_before: "soon" is neither a duration`},
		// check rejects exactly what run rejects, at the same line.
		{name: "check: renew_before word", args: []string{"--config", badPolicy, "check"}, code: exitUsage, stderr: `policy.toml:10: certificate[0].renew_before: "soon" is neither a duration`},
		{name: "check: max_orders", args: []string{"--config", badPolicy, "check"}, code: exitUsage, stderr: "policy.toml:11: certificate[0].max_orders: 1000 must be between 1 and 100"},
		{name: "check: renew_before fraction", args: []string{"--config", badFraction, "check"}, code: exitUsage, stderr: `fraction.toml:10: certificate[0].renew_before: lifetime fraction "150%" must be between 0 and 1`},
		{name: "check: missing script", args: []string{"--config", missingScript, "check"}, code: exitUsage, stderr: "script.toml:10: certificate[0].scripts[0]: missing.lua: no such file or directory"},
		{name: "run: missing script", args: []string{"--config", missingScript, "run"}, code: exitUsage, stderr: "script.toml:10: certificate[0].scripts[0]: missing.lua: no such file or directory"},
		{name: "run: renew_before fraction", args: []string{"--config", badFraction, "run"}, code: exitUsage, stderr: `fraction.toml:10: certificate[0].renew_before: lifetime fraction "150%" must be between 0 and 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.code, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("run(%q) stdout = %q, want it to contain %q", tt.args, &stdout, tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", tt.args, &stderr, tt.stderr)
			}
		})
	}
}
