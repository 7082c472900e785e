package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugins/dnsexec/dnsexec"
	"github.com/acmehook/acmehook/plugins/standalone/standalone"
	"github.com/acmehook/acmehook/plugins/webroot/webroot"
)

// docExample is one ```toml block of the documentation.
type docExample struct {
	file  string // as found, e.g. ../../docs/configuration.md
	line  int    // of the opening fence
	table string // from the fence's info string: ```toml [plugins.NAME.config]
	body  string
	want  string // TestDocExamplesCatchDrift: the error expected
}

// fenceRE matches an opening ```toml fence and an optional table name
// after it.
var fenceRE = regexp.MustCompile("^```toml(?:\\s+\\[([A-Za-z0-9_.-]+)\\])?\\s*$")

// docExamples returns every ```toml block of README.md and docs/*.md.
func docExamples(t *testing.T) []docExample {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []docExample
	for _, f := range append([]string{"../../README.md"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cur *docExample
		for i, l := range strings.Split(string(b), "\n") {
			switch {
			case cur == nil:
				if m := fenceRE.FindStringSubmatch(l); m != nil {
					cur = &docExample{file: f, line: i + 1, table: m[1]}
				}
			case strings.HasPrefix(l, "```"):
				out = append(out, *cur)
				cur = nil
			default:
				cur.body += l + "\n"
			}
		}
		if cur != nil {
			t.Errorf("%s:%d: ```toml block is not closed", f, cur.line)
		}
	}
	return out
}

// envRefRE finds the environment variables an example reads secrets from.
var envRefRE = regexp.MustCompile(`\b(?:secret_env|eab_hmac_key_env|password_env)\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"`)

// docContext is what an example that is not a whole file is completed
// with: each table the example does not define itself, appended after it
// (so the example's own lines keep their numbers).
var docContext = []struct{ header, body string }{
	{"[ca]", "directory = \"letsencrypt-staging\"\n"},
	{"[plugins.webroot]", "path = \"/usr/local/lib/acmehook/webroot\"\n"},
	{"[plugins.dns]", "path = \"/usr/local/lib/acmehook/dnsexec\"\n"},
}

// shippedConfigs makes the configuration struct of each plugin acmehook
// ships, by the base name of its binary.
var shippedConfigs = map[string]func() any{
	"webroot":    func() any { return &webroot.Config{} },
	"standalone": func() any { return &standalone.Config{} },
	"dnsexec":    func() any { return &dnsexec.Config{} },
}

// loadExample completes ex as the convention says, writes it into dir and
// loads it; the config table of each shipped plugin is then decoded the
// way the plugin decodes it (sdk.Config.Decode: unknown keys refused). It
// returns the problem and the file as loaded.
func loadExample(t *testing.T, dir string, ex docExample) (string, error) {
	for _, m := range envRefRE.FindAllStringSubmatch(ex.body, -1) {
		t.Setenv(m[1], "ZG9jLWV4YW1wbGU") // base64url, as an EAB key must be
	}
	text := ex.body
	if ex.table != "" {
		plugin, ok := strings.CutSuffix(strings.TrimPrefix(ex.table, "plugins."), ".config")
		if !ok || !strings.HasPrefix(ex.table, "plugins.") {
			return text, fmt.Errorf("fence names [%s]; only [plugins.NAME.config] is known", ex.table)
		}
		text = fmt.Sprintf("[plugins.%s]\npath = \"/usr/local/lib/acmehook/%s\"\n[%s]\n", plugin, plugin, ex.table) + text
	}
	for _, c := range docContext {
		if !strings.Contains(text, c.header) && !strings.Contains(text, strings.TrimSuffix(c.header, "]")+".") {
			text += "\n" + c.header + "\n" + c.body
		}
	}
	p := filepath.Join(dir, "acmehook.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		return text, err
	}
	var errs []error
	for name, pl := range cfg.Plugins {
		mk := shippedConfigs[filepath.Base(pl.Path)]
		if mk == nil {
			continue
		}
		if err := (sdk.Config{Values: pl.RevealedConfig()}).Decode(mk()); err != nil {
			errs = append(errs, fmt.Errorf("plugins.%s.config (%s): %w", name, filepath.Base(pl.Path), err))
		}
	}
	return text, errors.Join(errs...)
}

// TestDocExamples loads every ```toml block of README.md and docs/*.md with
// config.Load, which must accept it (syntax, types, unknown keys and
// Validate; the files an example names need not exist, as for Load on a
// build machine), and decodes the config table of every shipped plugin as
// that plugin does. The convention, documented in docs/configuration.md
// ("Examples in the documentation"): a block is a part of acmehook.toml;
// the tables [ca], [plugins.webroot] and [plugins.dns] (dnsexec) are
// added after it when the block does not define them; a block whose fence
// reads ```toml [plugins.NAME.config] is the body of that table. Variables
// named by secret_env and the like are set for the test.
func TestDocExamples(t *testing.T) {
	examples := docExamples(t)
	if len(examples) < 5 {
		t.Fatalf("found %d ```toml blocks in README.md and docs/*.md, want the documentation's examples", len(examples))
	}
	dir := t.TempDir()
	for _, ex := range examples {
		name := fmt.Sprintf("%s:%d", strings.TrimPrefix(ex.file, "../../"), ex.line)
		t.Run(name, func(t *testing.T) {
			if text, err := loadExample(t, dir, ex); err != nil {
				t.Errorf("%s: the example does not load (the line after the fence is line 1 below, or line 4 for a [plugins.NAME.config] block):\n%v\n--- file\n%s", name, err, text)
			}
		})
	}
}

// TestDocExamplesCatchDrift: examples that were once in the README and
// wrong are refused by the same check.
func TestDocExamplesCatchDrift(t *testing.T) {
	for _, ex := range []docExample{
		{body: "[plugins.dns]\npath = \"/usr/lib/acmehook/dnsexec\"\n[plugins.dns.config]\ncommand = \"/etc/acmehook/dns-hook\"\ntoken = { secret_env = \"DNS_API_TOKEN\" }\n", want: `unknown field "command"`},
		{body: "[[certificate]]\nname = \"www\"\nrenew_before = \"720h\"\n", want: "certificate[0].domains: missing"},
		{table: "plugins.webroot.config", body: "webroot = \"/var/www\"\n", want: `unknown field "webroot"`},
	} {
		if _, err := loadExample(t, t.TempDir(), ex); err == nil || !strings.Contains(err.Error(), ex.want) {
			t.Errorf("example %q = %v, want an error containing %q", ex.body, err, ex.want)
		}
	}
}
