package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/acmehook/acmehook/acme"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.golden")

// TestLoadBad loads each testdata/bad/*.toml and compares the error with
// the .golden file beside it (regenerate with go test -update).
func TestLoadBad(t *testing.T) {
	t.Setenv("ACMEHOOK_TEST_EAB", "c2VjcmV0")
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".toml"), func(t *testing.T) {
			cfg, err := Load(f)
			if err == nil {
				t.Fatalf("Load(%s) = %+v, nil; want an error", f, cfg)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Load(%s) error does not wrap ErrInvalid: %v", f, err)
			}
			if cfg != nil {
				t.Errorf("Load(%s) returned a config with its error", f)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run go test -update): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("Load(%s) error mismatch (-want +got):\n%s", f, diff)
			}
		})
	}
}

// TestLoadExample loads the repository's acmehook.toml, the demo config.
func TestLoadExample(t *testing.T) {
	cfg, err := Load("../../acmehook.toml")
	if err != nil {
		t.Fatalf("Load(acmehook.toml) = %v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"mailto:admin@example.com"}, cfg.CA.Contact()); diff != "" {
		t.Errorf("CA.Contact() (-want +got):\n%s", diff)
	}
	if got, want := cfg.CA.Directory, "https://127.0.0.1:14000/dir"; got != want {
		t.Errorf("CA.Directory = %q, want %q", got, want)
	}
	if got, want := cfg.CA.CABundle, filepath.Join(root, "demo/run/pebble.minica.pem"); got != want {
		t.Errorf("CA.CABundle = %q, want %q", got, want)
	}
	if got, want := cfg.Storage, filepath.Join(root, "demo/run/storage"); got != want {
		t.Errorf("Storage = %q, want %q", got, want)
	}
	var names []string
	for _, c := range cfg.Certificates {
		names = append(names, c.Name)
	}
	if diff := cmp.Diff([]string{"standalone", "webroot", "wildcard"}, names); diff != "" {
		t.Errorf("certificate names (-want +got):\n%s", diff)
	}
	wild := cfg.Certificate("wildcard")
	if got := wild.SolverFor(acme.Identifier{Type: acme.IdentifierDNS, Value: "*.example.org"}); got != "dnsexec" {
		t.Errorf("SolverFor(*.example.org) = %q, want dnsexec", got)
	}
	if got := wild.SolverFor(acme.Identifier{Type: acme.IdentifierDNS, Value: "example.org"}); got != "webroot" {
		t.Errorf("SolverFor(example.org) = %q, want webroot", got)
	}
	if got, want := cfg.Plugins["dnsexec"].Path, filepath.Join(root, "bin/dnsexec"); got != want {
		t.Errorf("dnsexec path = %q, want %q", got, want)
	}
	if got, want := cfg.Plugins["webroot"].CallTimeout.Duration, DefaultCallTimeout; got != want {
		t.Errorf("webroot call timeout = %v, want default %v", got, want)
	}
	caps := map[string]Capabilities{
		"standalone": {Challenges: []string{acme.ChallengeTLSALPN01, acme.ChallengeHTTP01}},
		"webroot":    {Challenges: []string{acme.ChallengeHTTP01}},
		"dnsexec":    {Challenges: []string{acme.ChallengeDNS01}},
	}
	if err := cfg.CheckSolverCapabilities(caps); err != nil {
		t.Errorf("CheckSolverCapabilities = %v, want nil", err)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "acmehook.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = `
[ca]
directory = "letsencrypt-staging"
[plugins.web]
path = "bin/webroot"
[[certificate]]
name = "site"
domains = ["Example.COM.", "192.0.2.1", "2001:DB8::1"]
solver = "web"
scripts = ["hooks/deploy.lua"]
`

func TestDefaults(t *testing.T) {
	p := writeConfig(t, minimal)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	cert := cfg.Certificates[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"Storage", cfg.Storage, filepath.Join(dir, DefaultStorage)},
		{"Concurrency", cfg.Concurrency, DefaultConcurrency},
		{"CA.Directory", cfg.CA.Directory, LetsEncryptStaging},
		{"CA.AccountKeyType", cfg.CA.AccountKeyType, DefaultAccountKeyType},
		{"CA.HTTPTimeout", cfg.CA.HTTPTimeout.Duration, DefaultHTTPTimeout},
		{"CA.OrderTimeout", cfg.CA.OrderTimeout.Duration, DefaultOrderTimeout},
		{"CA.TrustRoots", cfg.CA.TrustRoots, ""},
		{"Plugin.Name", cfg.Plugins["web"].Name, "web"},
		{"Plugin.Path", cfg.Plugins["web"].Path, filepath.Join(dir, "bin/webroot")},
		{"Plugin.StartTimeout", cfg.Plugins["web"].StartTimeout.Duration, DefaultStartTimeout},
		{"Plugin.MaxCalls", cfg.Plugins["web"].MaxCalls, DefaultMaxCalls},
		{"Certificate.KeyType", cert.KeyType, DefaultKeyType},
		{"Certificate.ScriptTimeout", cert.ScriptTimeout.Duration, DefaultScriptTimeout},
		{"Certificate.Scripts", cert.Scripts, []string{filepath.Join(dir, "hooks/deploy.lua")}},
		{"Certificate.Identifiers", cert.Identifiers, []acme.Identifier{
			{Type: acme.IdentifierDNS, Value: "example.com"}, {Type: acme.IdentifierIP, Value: "192.0.2.1"}, {Type: acme.IdentifierIP, Value: "2001:db8::1"},
		}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

// TestDirFixedAtLoad: a configuration loaded by a relative path keeps its
// directory after the process changes directory.
func TestDirFixedAtLoad(t *testing.T) {
	p := writeConfig(t, minimal)
	t.Chdir(filepath.Dir(filepath.Dir(p)))
	cfg, err := Load(filepath.Join(filepath.Base(filepath.Dir(p)), "acmehook.toml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(p))
	if got, want := cfg.Dir(), filepath.Dir(p); got != want {
		t.Errorf("Dir() after Chdir = %q, want %q", got, want)
	}
}

func TestSecretSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "eab.key"), []byte("ZmlsZS1rZXk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dns.token"), []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ACMEHOOK_TEST_EAB", "ZW52LWtleQ")
	t.Setenv("ACMEHOOK_TEST_TOKEN", "env-token")
	tests := []struct {
		name, ca, want string
	}{
		{"inline", `eab_hmac_key = "aW5saW5l"`, "aW5saW5l"},
		{"file", `eab_hmac_key_file = "eab.key"`, "ZmlsZS1rZXk"},
		{"env", `eab_hmac_key_env = "ACMEHOOK_TEST_EAB"`, "ZW52LWtleQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".toml")
			body := fmt.Sprintf(`[ca]
directory = "letsencrypt"
eab_kid = "kid"
%s
[plugins.dns]
path = "dnsexec"
[plugins.dns.config]
plain = "visible"
nested = { file_token = { secret_file = "dns.token" }, env_token = { secret_env = "ACMEHOOK_TEST_TOKEN" } }
`, tt.ca)
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			key, err := cfg.EABKey()
			if want, _ := base64.RawURLEncoding.DecodeString(tt.want); err != nil || !bytes.Equal(key, want) {
				t.Errorf("EABKey() = %q, %v; want %q", key, err, want)
			}
			got := cfg.Plugins["dns"].RevealedConfig()
			want := map[string]any{"plain": "visible", "nested": map[string]any{"file_token": "file-token", "env_token": "env-token"}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("RevealedConfig() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSecretRedacted prints a Secret every way a program might and checks
// the value never appears.
func TestSecretRedacted(t *testing.T) {
	const value = "hunter2-hmac-key"
	s := NewSecret(value)
	holder := struct{ Key Secret }{s}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", s)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", s)
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"String":   s.String(),
		"%v":       fmt.Sprintf("%v", s),
		"%s":       fmt.Sprintf("%s", s),
		"%q":       fmt.Sprintf("%q", s),
		"%x":       fmt.Sprintf("%x", s),
		"%+v":      fmt.Sprintf("%+v", holder),
		"%#v":      fmt.Sprintf("%#v", holder),
		"slog":     logged.String(),
		"json":     string(js),
		"Duration": Duration{time.Second}.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("%s output %q contains the secret", name, out)
		}
	}
	if !strings.Contains(outputs["%+v"], "[redacted]") {
		t.Errorf("%%+v = %q, want [redacted]", outputs["%+v"])
	}
	if s.Reveal() != value {
		t.Errorf("Reveal() = %q, want %q", s.Reveal(), value)
	}
}

func TestCheckSolverCapabilities(t *testing.T) {
	body := `
[ca]
directory = "letsencrypt"
[plugins.web]
path = "webroot"
[plugins.dns]
path = "dnsexec"
[plugins.alpn]
path = "standalone"
[[certificate]]
name = "mixed"
domains = ["*.example.com", "example.com", "192.0.2.1"]
solver = "dns"
solvers = { "example.com" = "web", "192.0.2.1" = "alpn" }
`
	cfg, err := Load(writeConfig(t, body))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		caps map[string]Capabilities
		want []string // substrings, one per expected problem
	}{
		{"all fit", map[string]Capabilities{
			"web": {[]string{acme.ChallengeHTTP01}}, "dns": {[]string{acme.ChallengeDNS01}}, "alpn": {[]string{acme.ChallengeTLSALPN01}},
		}, nil},
		{"wildcard with http-01 only", map[string]Capabilities{
			"web": {[]string{acme.ChallengeHTTP01}}, "dns": {[]string{acme.ChallengeHTTP01}}, "alpn": {[]string{acme.ChallengeTLSALPN01}},
		}, []string{`:13: certificate[0].solver: *.example.com cannot be validated by plugin "dns", which offers http-01 (wildcards need dns-01)`}},
		{"IP with dns-01 only", map[string]Capabilities{
			"web": {[]string{acme.ChallengeHTTP01}}, "dns": {[]string{acme.ChallengeDNS01}}, "alpn": {[]string{acme.ChallengeDNS01}},
		}, []string{`:14: certificate[0].solvers."192.0.2.1": 192.0.2.1 cannot be validated by plugin "alpn", which offers dns-01 (IP addresses need http-01 or tls-alpn-01)`}},
		{"plugin missing", map[string]Capabilities{
			"dns": {[]string{acme.ChallengeDNS01}}, "alpn": {nil},
		}, []string{`example.com: plugin "web" reported no capabilities`, `which offers none`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := cfg.CheckSolverCapabilities(tt.caps)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("CheckSolverCapabilities = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckSolverCapabilities = nil, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("CheckSolverCapabilities = %d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckSolverCapabilities = %v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestChallengeTypes(t *testing.T) {
	wild := acme.Identifier{Type: acme.IdentifierDNS, Value: "*.example.com"}
	ip := acme.Identifier{Type: acme.IdentifierIP, Value: "192.0.2.1"}
	name := acme.Identifier{Type: acme.IdentifierDNS, Value: "example.com"}
	all := []string{acme.ChallengeHTTP01, acme.ChallengeDNS01, acme.ChallengeTLSALPN01}
	tests := []struct {
		pref string
		id   acme.Identifier
		want []string
	}{
		{"", name, all},
		{"", wild, []string{acme.ChallengeDNS01}},
		{"", ip, []string{acme.ChallengeHTTP01, acme.ChallengeTLSALPN01}},
		{acme.ChallengeTLSALPN01, name, []string{acme.ChallengeTLSALPN01}},
		{acme.ChallengeHTTP01, wild, nil},
	}
	for _, tt := range tests {
		c := &Certificate{Challenge: tt.pref}
		got := c.ChallengeTypes(tt.id, all)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ChallengeTypes(%v) with challenge=%q (-want +got):\n%s", tt.id, tt.pref, diff)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"site": true, "example.com": true, "a_b-c.9": true,
		"": false, "..": false, ".": false, "../x": false, "a/b": false, `a\b`: false,
		".hidden": false, "a b": false, strings.Repeat("a", 101): false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestDocumentedKeys checks that docs/configuration.md documents every key
// the decoder accepts.
func TestDocumentedKeys(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(rt reflect.Type)
	walk = func(rt reflect.Type) {
		for f := range rt.Fields() {
			tag := f.Tag.Get("toml")
			if tag == "" || tag == "-" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == rt.PkgPath() && ft.Name() != "Duration" && ft.Name() != "Secret" {
				walk(ft) // a table: its keys are documented, not its name
				continue
			}
			if !bytes.Contains(doc, []byte("`"+tag+"`")) && !bytes.Contains(doc, []byte("."+tag+"`")) {
				t.Errorf("key %s (%s.%s) is not documented in docs/configuration.md", tag, rt.Name(), f.Name)
			}
		}
	}
	walk(reflect.TypeFor[Config]())
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("good.pem", selfSigned(t), 0o644)
	write("empty.pem", "no certificate here\n", 0o644)
	write("bin/ok", "#!/bin/sh\n", 0o755)
	write("bin/noexec", "#!/bin/sh\n", 0o644)
	write("deploy.lua", "-- ok\n", 0o644)
	tests := []struct {
		name, bundle, plugin, script, output string
		want                                 []string
	}{
		{"all present", "good.pem", "bin/ok", "deploy.lua", "out/../deploy.lua", nil},
		{"all wrong", "empty.pem", "bin/noexec", "missing.lua", "nodir/cert.pem", []string{
			":3: ca.ca_bundle: empty.pem holds no PEM certificate",
			":4: ca.trust_roots: empty.pem holds no PEM certificate",
			":6: plugins.p.path: bin/noexec is not an executable file",
			":11: certificate[0].scripts[0]: missing.lua: no such file or directory",
			":12: certificate[0].output.cert: directory nodir does not exist",
		}},
		{"missing files", "missing.pem", "bin/missing", "bin", "deploy.lua", []string{
			":3: ca.ca_bundle: missing.pem: no such file or directory",
			":4: ca.trust_roots: missing.pem: no such file or directory",
			":6: plugins.p.path: bin/missing: no such file or directory",
			":11: certificate[0].scripts[0]: bin is not a regular file",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "acmehook.toml")
			body := fmt.Sprintf(`[ca]
directory = "letsencrypt"
ca_bundle = %q
trust_roots = %q
[plugins.p]
path = %q
[[certificate]]
name = "c"
domains = ["example.com"]
solver = "p"
scripts = [%q]
output.cert = %q
`, tt.bundle, tt.bundle, tt.plugin, tt.script, tt.output)
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.CheckFiles()
			var got []string
			if err != nil {
				for _, l := range strings.Split(err.Error(), "\n") {
					got = append(got, strings.TrimPrefix(l, p))
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckFiles (-want +got):\n%s", diff)
			}
		})
	}
}

// selfSigned returns a freshly generated self-signed CA certificate as PEM.
func selfSigned(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "acmehook test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestLoadLimits: inputs that once hung the loader or could exhaust it are
// refused with an error that names the file (and the line, where there is
// one).
func TestLoadLimits(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), MaxFileSize/10+1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, body, path, want string
	}{
		{"unbalanced brackets", "[[certificate]]\nname = \"a\"\ndomains = [ } ]\n", "", ":3: certificate.domains: expected value but found '}' instead"},
		{"unbalanced in inline table", "a = { b = [ } ] }\n", "", ":1: "},
		{"deep arrays", "a = " + strings.Repeat("[", 40) + strings.Repeat("]", 40), "", ":1: keys, arrays and inline tables nest deeper than 32 levels"},
		{"deep dotted key", strings.Repeat("a.", 40) + "b = 1", "", ":1: keys, arrays and inline tables nest deeper than 32 levels"},
		{"deep header", "x = 1\n[" + strings.Repeat("a.", 40) + "b]", "", ":2: keys, arrays and inline tables nest deeper than 32 levels"},
		{"file too large", "", big, "big.toml: larger than 4 MiB; is this the configuration file?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path
			if p == "" {
				p = filepath.Join(dir, "acmehook.toml")
				if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { _, err := Load(p); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(loadBound):
				t.Fatalf("Load did not return within %s", loadBound)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestPluginSecretValues(t *testing.T) {
	p := &Plugin{Config: map[string]any{
		"token":    NewSecret("tok-1"),
		"endpoint": "https://dns.example",
		"accounts": []map[string]any{{"key": NewSecret("key-2")}},
		"nested":   map[string]any{"list": []any{NewSecret("v-3"), "plain"}},
	}}
	got := p.SecretValues()
	slices.Sort(got)
	if want := []string{"key-2", "tok-1", "v-3"}; !slices.Equal(got, want) {
		t.Errorf("SecretValues() = %q, want %q", got, want)
	}
}

// TestRelativePaths: every path-like key written relative is made
// absolute against the configuration file's directory when it loads,
// wherever the process runs (acmehook never changes directory).
func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "eab.key"), []byte("ZWFi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "acmehook.toml")
	if err := os.WriteFile(p, []byte(`storage = "data"
[ca]
directory = "letsencrypt-staging"
ca_bundle = "ca/roots.pem"
eab_kid = "k"
eab_hmac_key_file = "eab.key"
[lua]
lib_dir = "lua"
[plugins.web]
path = "bin/webroot"
config = { token = { secret_file = "token" } }
[[certificate]]
name = "www"
domains = ["www.example.com"]
solver = "web"
scripts = ["scripts/deploy.lua"]
output = { cert = "out/cert.pem", key = "out/key.pem", chain = "out/chain.pem", fullchain = "out/full.pem" }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	cert := cfg.Certificates[0]
	for _, c := range []struct{ key, got, want string }{
		{"storage", cfg.Storage, "data"},
		{"ca.ca_bundle", cfg.CA.CABundle, "ca/roots.pem"},
		{"ca.eab_hmac_key_file", cfg.CA.EABHMACKeyFile, "eab.key"},
		{"lua.lib_dir", cfg.Lua.LibDir, "lua"},
		{"plugins.web.path", cfg.Plugins["web"].Path, "bin/webroot"},
		{"certificate[0].scripts[0]", cert.Scripts[0], "scripts/deploy.lua"},
		{"certificate[0].output.cert", cert.Output.Cert, "out/cert.pem"},
		{"certificate[0].output.key", cert.Output.Key, "out/key.pem"},
		{"certificate[0].output.chain", cert.Output.Chain, "out/chain.pem"},
		{"certificate[0].output.fullchain", cert.Output.Fullchain, "out/full.pem"},
		{"Dir()", cfg.Dir(), "."},
	} {
		if want := filepath.Join(dir, c.want); c.got != want {
			t.Errorf("%s = %q, want %q", c.key, c.got, want)
		}
	}
	if got, err := cfg.EABKey(); string(got) != "eab" {
		t.Errorf("eab_hmac_key_file read %q (%v), want the file beside the configuration", got, err)
	}
	if got := cfg.Plugins["web"].RevealedConfig()["token"]; got != "t" {
		t.Errorf("secret_file read %q, want the file beside the configuration", got)
	}
}
