package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandLine runs the CLI in-process for what needs no CA or plugin:
// exit statuses, usage errors, configuration errors, version and script
// test.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badConfig := write("bad.toml", "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1/dir\"\nbogus = 1\n")
	goodConfig := write("good.toml", "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1/dir\"\n"+
		"[plugins.w]\npath = \"/bin/true\"\n[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\"]\nsolver = \"w\"\n")
	okScript := write("ok.lua", `local a = require("acmehook")
a.on("renew", function(ev) assert(ev.test and ev.cert_name == "www" and ev.domains[1] == "www.example.com" and ev.previous_serial) end)
`)
	varsConfig := write("vars.toml", "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1/dir\"\n[lua.vars]\nmarker = \"from-config\"\n")
	varsScript := write("vars.lua", `local a = require("acmehook")
a.on("issued", function(ev) if a.vars.marker ~= "from-config" then error("vars.marker = " .. tostring(a.vars.marker)) end end)
`)
	runScript := write("run.lua", `local a = require("acmehook")
a.on("run-begin", function(ev) assert(ev.test and ev.cert_name == nil and ev.certificates[1].cert_name == "www" and ev.certificates[1].action == "renew") end)
a.on("run-end", function(ev) assert(ev.test and ev.deployed[1] == "www" and #ev.failed == 0 and ev.certificates[1].domains[1] == "www.example.com") end)
a.on("user-action-required", function(ev) assert(ev.test and ev.cert_name == "www" and ev.error.problem_instance) end)
a.on("renewal-held", function(ev) assert(ev.test and ev.cert_name == "www" and ev.held_until and ev.hold_reason) end)
a.on("tos-changed", function(ev) assert(ev.test and ev.cert_name == nil and ev.terms_of_service ~= ev.previous_terms_of_service and ev.agreed == false) end)
`)
	failScript := write("fail.lua", `local a = require("acmehook")
a.on("issued", function(ev) error("reload failed") end)
`)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "no command", args: nil, code: exitUsage, stderr: "Usage:"},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "Examples:"},
		{name: "unknown command", args: []string{"frob"}, code: exitUsage, stderr: `unknown command "frob"`},
		{name: "unknown flag", args: []string{"run", "--frob"}, code: exitUsage, stderr: "unknown flag: --frob"},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: "acmehook "},
		{name: "missing config", args: []string{"--config", filepath.Join(dir, "none.toml"), "run"}, code: exitUsage, stderr: "none.toml"},
		{name: "invalid config", args: []string{"--config", badConfig, "check"}, code: exitUsage, stderr: "bad.toml:4: ca.bogus: unknown key"},
		{name: "bad log level", args: []string{"--config", goodConfig, "list", "--log-level", "loud"}, code: exitUsage, stderr: `--log-level "loud"`},
		{name: "issue without name", args: []string{"--config", goodConfig, "issue"}, code: exitUsage, stderr: "issue needs the name"},
		{name: "issue unknown name", args: []string{"--config", goodConfig, "issue", "nope"}, code: exitUsage, stderr: `"nope"`},
		{name: "account without subcommand", args: []string{"--config", goodConfig, "account"}, code: exitUsage, stderr: "show, update, rollover, deactivate"},
		{name: "list without certificates", args: []string{"--config", goodConfig, "list"}, code: exitOK, stdout: "now (no certificate)"},
		{name: "script test", args: []string{"--config", goodConfig, "script", "test", okScript, "renew", "--cert", "www"}, code: exitOK, stdout: "renew handled without error"},
		{name: "script test flag first", args: []string{"--config", goodConfig, "script", "test", "--cert", "www", okScript, "renew"}, code: exitOK, stdout: "renew handled without error"},
		{name: "script test run-begin", args: []string{"--config", goodConfig, "script", "test", runScript, "run-begin", "--cert", "www"}, code: exitOK, stdout: "run-begin handled without error"},
		{name: "script test run-end", args: []string{"--config", goodConfig, "script", "test", runScript, "run-end", "--cert", "www"}, code: exitOK, stdout: "run-end handled without error"},
		{name: "script test user-action-required", args: []string{"--config", goodConfig, "script", "test", runScript, "user-action-required", "--cert", "www"}, code: exitOK, stdout: "user-action-required handled without error"},
		{name: "script test renewal-held", args: []string{"--config", goodConfig, "script", "test", runScript, "renewal-held", "--cert", "www"}, code: exitOK, stdout: "renewal-held handled without error"},
		{name: "script test tos-changed", args: []string{"--config", goodConfig, "script", "test", runScript, "tos-changed"}, code: exitOK, stdout: "tos-changed handled without error"},
		{name: "script test failing", args: []string{"script", "test", failScript, "issued"}, code: exitFailed, stderr: "fail.lua:2: reload failed"},
		{name: "script test with [lua.vars]", args: []string{"--config", varsConfig, "script", "test", varsScript, "issued"}, code: exitOK, stdout: "issued handled without error"},
		{name: "script test without the config's vars", args: []string{"--config", filepath.Join(dir, "none.toml"), "script", "test", varsScript, "issued"}, code: exitFailed, stderr: "vars.marker = nil"},
		{name: "script test unknown event", args: []string{"script", "test", okScript, "expired"}, code: exitUsage, stderr: `unknown event "expired"`},
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
