package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestGrammar runs every command and subcommand in-process with flags
// before and after its arguments, with --help and -h, and --version: one
// grammar for all of them. What needs no CA and no plugin runs for real;
// the rest is shown to parse by the usage error or the CA connection
// error it ends in.
func TestGrammar(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A CA that refuses connections: commands that contact it fail fast
	// with exit 1, after their command line was accepted.
	// The plugin /bin/true does not start: only check and plugins start
	// plugins. bare has no plugin and no certificate.
	conf := write("acmehook.toml", "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1:1/dir\"\n[plugins.w]\npath = \"/bin/true\"\n"+
		"[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\"]\nsolver = \"w\"\n")
	bare := write("bare.toml", "storage = \"b\"\n[ca]\ndirectory = \"https://127.0.0.1:1/dir\"\n")
	script := write("ok.lua", `local a = require("acmehook")
a.on("renew", function(ev) assert(ev.test and ev.cert_name == "www") end)
`)
	refused := "connection refused"

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"version flag", []string{"--version"}, exitOK, "acmehook ", ""},
		{"version command, flag after", []string{"version", "--log-level", "debug"}, exitOK, "acmehook ", ""},
		{"version command, flag before", []string{"--log-level", "debug", "version"}, exitOK, "acmehook ", ""},

		{"run, flag after", []string{"--config", conf, "run", "--log-level", "loud"}, exitUsage, "", `--log-level "loud"`},
		{"run, flag before", []string{"--log-level", "loud", "--config", conf, "run"}, exitUsage, "", `--log-level "loud"`},
		{"run with an argument", []string{"--config", conf, "run", "www"}, exitUsage, "", "run takes no arguments (got www)"},

		{"issue, flags after the name", []string{"issue", "nope", "--config", conf, "--log-level", "debug"}, exitUsage, "", `no such certificate in the configuration: "nope"`},
		{"issue, flags before the name", []string{"--config", conf, "--log-level", "debug", "issue", "nope"}, exitUsage, "", `no such certificate in the configuration: "nope"`},

		{"list, flags after", []string{"list", "--config", conf, "--log-format", "json"}, exitOK, "now (no certificate)", ""},
		{"list, flags before", []string{"--log-format", "json", "--config", conf, "list"}, exitOK, "now (no certificate)", ""},
		{"list --json", []string{"list", "--json", "--config", conf}, exitOK, `"name": "www"`, ""},

		{"explain, flags after the name", []string{"explain", "www", "--log-format", "json", "--config", conf}, exitOK, "no certificate issued yet", ""},
		{"explain, flags before the name", []string{"--config", conf, "explain", "--log-format", "json", "www"}, exitOK, "no certificate issued yet", ""},
		{"explain --json", []string{"--config", conf, "explain", "www", "--json"}, exitOK, `"due": true`, ""},

		{"revoke without --yes off a terminal", []string{"--config", conf, "revoke", "www"}, exitUsage, "", "add --yes"},
		{"revoke, flags after the name", []string{"revoke", "www", "--reason", "superseded", "--yes", "--config", conf}, exitFailed, "", "www has no certificate to revoke"},
		{"revoke, flags before the name", []string{"--config", conf, "revoke", "--yes", "--reason", "superseded", "www"}, exitFailed, "", "www has no certificate to revoke"},
		{"revoke -y", []string{"--config", conf, "revoke", "-y", "www"}, exitFailed, "", "www has no certificate to revoke"},

		{"daemon with an argument, flag after", []string{"--config", conf, "daemon", "now", "--log-level", "debug"}, exitUsage, "", "daemon takes no arguments"},
		{"daemon, bad flag before", []string{"--log-format", "xml", "--config", conf, "daemon"}, exitUsage, "", `--log-format "xml"`},

		{"check, flags after", []string{"check", "--config", bare, "--log-level", "warn"}, exitOK, "ok", ""},
		{"check --solve, flags before", []string{"--config", bare, "check", "--solve", "nope"}, exitUsage, "", `--solve "nope": no such certificate`},
		{"check, plugin that does not start", []string{"check", "--config", conf}, exitFailed, "plugin", ""},

		{"plugins, flags after", []string{"plugins", "--json", "--config", bare}, exitOK, `"plugins": []`, ""},
		{"plugins, flags before", []string{"--config", bare, "plugins"}, exitOK, "PLUGIN", ""},

		{"account show, flags after", []string{"account", "show", "--config", conf, "--log-level", "error"}, exitFailed, "", "no account stored"},
		{"account update, flags before", []string{"--config", conf, "account", "update"}, exitFailed, "", refused},
		{"account rollover, flags between", []string{"account", "--config", conf, "rollover"}, exitFailed, "", refused},
		{"account deactivate without --yes", []string{"--config", conf, "account", "deactivate"}, exitUsage, "", "cannot be undone; add --yes"},
		{"account deactivate --yes, flags after", []string{"account", "deactivate", "--yes", "--config", conf}, exitFailed, "", refused},
		{"account unknown subcommand", []string{"--config", conf, "account", "frob"}, exitUsage, "", `acmehook account: unknown subcommand "frob" (show, update`},

		{"script test, flags after the arguments", []string{"script", "test", script, "renew", "--cert", "www", "--config", conf}, exitOK, "renew handled without error", ""},
		{"script test, flags before the arguments", []string{"--config", conf, "script", "test", "--cert", "www", script, "renew"}, exitOK, "renew handled without error", ""},
		{"script test, flags between the arguments", []string{"script", "test", script, "--cert", "www", "renew", "--config", conf}, exitOK, "renew handled without error", ""},
		{"script without subcommand", []string{"script"}, exitUsage, "", "script needs a subcommand"},

		{"completion bash", []string{"completion", "bash"}, exitOK, "__start_acmehook", ""},
		{"completion zsh", []string{"completion", "zsh"}, exitOK, "#compdef acmehook", ""},
		{"completion fish", []string{"completion", "fish"}, exitOK, "complete -c acmehook", ""},
		{"completion of certificate names", []string{"__complete", "--config", conf, "explain", ""}, exitOK, "www\twww.example.com", ""},
		{"completion of --cert", []string{"__complete", "--config", conf, "script", "test", script, "renew", "--cert", ""}, exitOK, "www", ""},

		{"single-dash long flag", []string{"-config", conf, "list"}, exitUsage, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkRun(t, tt.args, tt.code, tt.stdout, tt.stderr)
		})
	}

	// Every command and subcommand: --help and -h, after and before it,
	// exit 0 with its usage on stdout, every flag written with two dashes.
	oneDash := regexp.MustCompile(`(^|[\s\[(])-[a-z][a-z-]+`)
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		path := strings.Fields(cmd.CommandPath())[1:]
		for _, args := range [][]string{append(path, "--help"), append([]string{"-h"}, path...)} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
					t.Fatalf("run(%q) = %d, want 0\nstderr: %s", args, code, &stderr)
				}
				if !strings.Contains(stdout.String(), "Usage:") || !strings.Contains(stdout.String(), "--config") {
					t.Errorf("run(%q) stdout = %q, want the usage with --config", args, &stdout)
				}
				if m := oneDash.FindString(stdout.String()); m != "" {
					t.Errorf("run(%q): usage has a one-dash flag %q\n%s", args, m, &stdout)
				}
			})
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(commandTree())
}

// commandTree is the whole command tree, with the help and completion
// commands cobra adds when it executes.
func commandTree() *cobra.Command {
	root := (&cli{}).rootCommand()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// repoRoot is the repository's directory, taken before any test changes
// the working directory.
var repoRoot, _ = filepath.Abs("../..")

// TestDocumentedCommands checks that docs/cli.md names every command and
// subcommand and every flag of each (as `--flag`).
func TestDocumentedCommands(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "cli.md"))
	if err != nil {
		t.Fatal(err)
	}
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		path := strings.TrimPrefix(cmd.CommandPath(), "acmehook")
		if path != "" && !bytes.Contains(doc, []byte("`"+strings.TrimSpace(path))) && !bytes.Contains(doc, []byte("`acmehook"+path)) {
			t.Errorf("docs/cli.md does not document the command %q", cmd.CommandPath())
		}
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if !bytes.Contains(doc, []byte("`--"+f.Name)) {
				t.Errorf("docs/cli.md does not document --%s of %q", f.Name, cmd.CommandPath())
			}
		})
		cmd.PersistentFlags().VisitAll(func(f *pflag.Flag) {
			if !bytes.Contains(doc, []byte("`--"+f.Name)) {
				t.Errorf("docs/cli.md does not document the global flag --%s", f.Name)
			}
		})
		if cmd.Name() == "completion" || cmd.Name() == "help" {
			return // completion bash|zsh|fish|powershell is one entry
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(commandTree())
}

// TestConfigEnv checks that ACMEHOOK_CONFIG is the default of --config,
// and that --config wins over it.
func TestConfigEnv(t *testing.T) {
	dir := t.TempDir()
	for name, cert := range map[string]string{"env.toml": "from-env", "flag.toml": "from-flag"} {
		body := "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1:1/dir\"\n[plugins.w]\npath = \"/bin/true\"\n" +
			"[[certificate]]\nname = \"" + cert + "\"\ndomains = [\"www.example.com\"]\nsolver = \"w\"\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(configEnv, filepath.Join(dir, "env.toml"))
	checkRun(t, []string{"list"}, exitOK, "from-env", "")
	checkRun(t, []string{"list", "--config", filepath.Join(dir, "flag.toml")}, exitOK, "from-flag", "")
	checkRun(t, []string{"list", "--help"}, exitOK, "env.toml", "")
}

// TestJSONOutputIsOneDocument checks that list, explain and plugins with
// --json print exactly one JSON document and nothing else on stdout, with
// the documented fields and no others.
func TestJSONOutputIsOneDocument(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "acmehook.toml")
	body := "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1:1/dir\"\n" +
		"[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\", \"example.com\"]\nsolver = \"w\"\n[plugins.w]\npath = \"/bin/true\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		into any
		keys []string
	}{
		{[]string{"list", "--json"}, &ListOutput{}, []string{"certificates"}},
		{[]string{"explain", "www", "--json"}, &ExplainOutput{}, []string{"name", "domains", "next", "reason", "due", "at", "next_check", "current", "deploy_pending", "last_event", "error", "deployed", "renewal"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--config", conf}, tt.args...)
			if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
				t.Fatalf("run(%q) = %d\nstderr: %s", args, code, &stderr)
			}
			dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(tt.into); err != nil {
				t.Fatalf("stdout is not the documented document: %v\n%s", err, &stdout)
			}
			if dec.More() {
				t.Errorf("stdout holds more than one JSON document\n%s", &stdout)
			}
			var m map[string]any
			json.Unmarshal(stdout.Bytes(), &m)
			for _, k := range tt.keys {
				if _, ok := m[k]; !ok {
					t.Errorf("key %q missing\n%s", k, &stdout)
				}
			}
			if len(m) != len(tt.keys) {
				t.Errorf("keys %v, want exactly %v", m, tt.keys)
			}
		})
	}
}

func checkRun(t *testing.T, args []string, code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	got := run(context.Background(), args, &out, &errOut)
	if got != code {
		t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", args, got, code, &out, &errOut)
	}
	if !strings.Contains(out.String(), stdout) {
		t.Errorf("run(%q) stdout = %q, want it to contain %q", args, &out, stdout)
	}
	if !strings.Contains(errOut.String(), stderr) {
		t.Errorf("run(%q) stderr = %q, want it to contain %q", args, &errOut, stderr)
	}
}
