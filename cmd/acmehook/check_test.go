package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckSolve runs "check --solve" with a webroot whose directory is
// served where the self-check looks and one whose directory is not: the
// first passes, the second fails with the self-check's reason, and Pebble
// (configured as the CA) receives no request at all.
func TestCheckSolve(t *testing.T) {
	dir := t.TempDir()
	bin := bins["webroot"]
	// The package's web server serves webRoot where the self-check looks.
	served, unserved := webRoot, filepath.Join(dir, "unserved")
	if err := os.Mkdir(unserved, 0o755); err != nil {
		t.Fatal(err)
	}

	conf := filepath.Join(dir, "acmehook.toml")
	body := fmt.Sprintf(`storage = "storage"
[ca]
directory = %q
ca_bundle = %q
[self_check]
http_port = %d
resolvers = [%q]
timeout = "500ms"
[plugins.good]
path = %q
config = { root = %q }
[plugins.bad]
path = %q
config = { root = %q }
[[certificate]]
name = "good"
domains = ["www.example.com", "example.com"]
solver = "good"
[[certificate]]
name = "bad"
domains = ["bad.example.com"]
solver = "bad"
`, pebble.DirectoryURL, pebble.CAFile, pebble.HTTPPort, pebble.DNSAddr, bin, served, bin, unserved)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	pebble.Counter().Reset()
	for _, tt := range []struct {
		name   string
		code   int
		stdout []string
		stderr string
	}{
		{"good", exitOK, []string{
			"www.example.com by good (http-01, ", "): ok: presented, self-checked, cleaned up",
			"example.com by good (http-01, ",
			"certificate good: every identifier passed (the CA was not contacted)",
		}, ""},
		{"bad", exitFailed, []string{
			"bad.example.com by bad (http-01, ",
			"): FAILED: self-check of http-01 for bad.example.com (solver bad) failed: unexpected http status: 404 Not Found",
			"certificate bad: 1 of 1 identifiers failed",
		}, ""},
		{"nope", exitUsage, nil, `--solve "nope": no such certificate`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := []string{"--config", conf, "--log-level", "warn", "check", "--solve", tt.name}
			if code := run(ctx, args, &stdout, &stderr); code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", args, code, tt.code, &stdout, &stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout = %q, want it to contain %q", &stdout, want)
				}
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", &stderr, tt.stderr)
			}
		})
	}
	if counts, total := pebble.Counter().Snapshot(); total != 0 {
		t.Errorf("Pebble requests %v, want none", counts)
	}
	for _, d := range []string{served, unserved} {
		left, _ := filepath.Glob(filepath.Join(d, ".well-known", "acme-challenge", "*"))
		if len(left) != 0 {
			t.Errorf("challenge files left in %s: %v", d, left)
		}
	}
}

// TestCheckPluginPath: check refuses a plugin path that is missing or not
// executable with exit 2, naming the file:line and the path (relative to
// the configuration's directory) once, before starting any plugin.
func TestCheckPluginPath(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "gone"), "gone: no such file or directory"},
		{"not executable", plain, "plain is not an executable file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conf := filepath.Join(dir, "acmehook.toml")
			body := fmt.Sprintf("[ca]\ndirectory = %q\n[plugins.py]\npath = %q\n[[certificate]]\nname = \"www\"\ndomains = [\"example.com\"]\nsolver = \"py\"\n", pebble.DirectoryURL, tt.path)
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			args := []string{"--config", conf, "check"}
			if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", args, code, exitUsage, &stdout, &stderr)
			}
			if want := conf + ":4: plugins.py.path: "; !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q, want %q and %q", &stderr, want, tt.want)
			}
			if strings.Count(stderr.String(), tt.want) != 1 || strings.Contains(stdout.String(), "PLUGIN") {
				t.Errorf("stdout %q stderr %q: want the error once and no plugin started", &stdout, &stderr)
			}
		})
	}
}

// TestCheckSolveOnlyItsPlugins: "check --solve NAME" starts only the
// plugins NAME uses: another certificate's plugin that cannot start does
// not stop it and is not shown.
func TestCheckSolveOnlyItsPlugins(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken-plugin")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho not a plugin >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "acmehook.toml")
	write := func(otherPath string) {
		body := fmt.Sprintf(`storage = "storage"
[ca]
directory = %q
ca_bundle = %q
[self_check]
http_port = %d
resolvers = [%q]
timeout = "500ms"
[plugins.good]
path = %q
config = { root = %q }
[plugins.other]
path = %q
[[certificate]]
name = "good"
domains = ["www.example.com"]
solver = "good"
[[certificate]]
name = "other"
domains = ["other.example.com"]
solver = "other"
`, pebble.DirectoryURL, pebble.CAFile, pebble.HTTPPort, pebble.DNSAddr, bins["webroot"], webRoot, otherPath)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name      string
		otherPath string
		args      []string
		code      int
		stdout    string
		stderr    string
		notOut    string
	}{
		{"solve starts only its plugins", broken, []string{"check", "--solve", "good"}, exitOK,
			"certificate good: every identifier passed", "", "other"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			write(tt.otherPath)
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"--config", conf, "--log-level", "warn"}, tt.args...)
			if code := run(ctx, args, &stdout, &stderr); code != tt.code {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", args, code, tt.code, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout = %q, want it to contain %q", &stdout, tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", &stderr, tt.stderr)
			}
			if tt.notOut != "" && strings.Contains(stdout.String()+stderr.String(), tt.notOut) {
				t.Errorf("output names %q:\nstdout: %s\nstderr: %s", tt.notOut, &stdout, &stderr)
			}
		})
	}
}
