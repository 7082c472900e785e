package engine

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/testenv"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// The package's shared test CA, plugin binaries and web server, set up by
// TestMain.
var (
	tenv    *testenv.Env
	pebble  *pebbletest.Server
	bins    map[string]string // plugin name -> executable
	dnsProg string            // dnsexec program that sets TXT records in pebble's DNS
	webRoot string            // served on 127.0.0.1:pebble.HTTPPort
)

func TestMain(m *testing.M) {
	if code, ok := ChildMain(); ok { // the test binary is its own Lua script host
		os.Exit(code)
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	te, err := testenv.Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer te.Close()
	tenv, pebble, bins, webRoot = te, te.Pebble, te.Bins, te.WebRoot
	dnsProg = bins["challtestsrv-dns"]
	return m.Run()
}

// env is one test's configuration directory, storage and script output.
type env struct {
	t      testing.TB
	work   testenv.Workdir // events.lua, its events, the gate, a webroot nobody serves
	now    func() time.Time
	config string // the TOML text last written
	// srv is the CA written into the configuration (the shared pebble
	// when nil); caExtra is added to its [ca] table.
	srv     *pebbletest.Server
	caExtra string
	logs    *bytes.Buffer // when set, run also logs here, at Debug
}

func newEnv(t testing.TB) *env {
	t.Helper()
	w := testenv.NewWorkdir(t)
	return &env{t: t, work: w}
}

// write writes acmehook.toml with the shared [ca] and [plugins] and the
// given [[certificate]] tables, and loads it.
func (e *env) write(certs string) *config.Config {
	e.t.Helper()
	srv := pebble
	if e.srv != nil {
		srv = e.srv
	}
	e.config = fmt.Sprintf(`
storage = "storage"
concurrency = 4
[ca]
directory = %q
ca_bundle = %q
email = ["ops@example.com"]
agree_tos = true
%s

[lua.vars]
marker = "from-acmehook.toml"

[self_check]
http_port = %d
tls_port = %d
resolvers = [%q]
timeout = "2s"
%s%s`, srv.DirectoryURL, srv.CAFile, e.caExtra,
		pebble.HTTPPort, pebble.TLSPort, pebble.DNSAddr,
		tenv.PluginsConfig(e.work.Unserved),
		certs)
	path := filepath.Join(e.work.Dir, "acmehook.toml")
	if err := os.WriteFile(path, []byte(e.config), 0o644); err != nil {
		e.t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		e.t.Fatalf("config.Load: %v\n%s", err, e.config)
	}
	return cfg
}

// run runs an engine over cfg once, like "acmehook run" (or "issue" with
// opts), and returns the results by name.
func (e *env) run(cfg *config.Config, opts RunOptions) map[string]Result {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	var logOut io.Writer = e.t.Output()
	level := slog.LevelInfo
	if e.logs != nil {
		logOut, level = io.MultiWriter(logOut, e.logs), slog.LevelDebug
	}
	eng, err := New(Options{
		Config:           cfg,
		Store:            st,
		Logger:           slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level})),
		Now:              e.now,
		progressInterval: time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer eng.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := eng.Run(ctx, opts)
	if err != nil {
		e.t.Fatalf("Run: %v", err)
	}
	out := map[string]Result{}
	for _, r := range res.Results {
		out[r.Name] = r
	}
	return out
}

// event returns what events.lua recorded for an event file name.
func (e *env) event(name string) map[string]any {
	e.t.Helper()
	return e.work.Event(e.t, name)
}

// current returns the stored current version of name.
func (e *env) current(cfg *config.Config, name string) *store.Version {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	v, err := st.LoadCertificate(context.Background(), name)
	if err != nil {
		e.t.Fatalf("LoadCertificate(%s): %v", name, err)
	}
	return v
}

func (e *env) meta(cfg *config.Config, name string) *Meta {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	m, err := readMeta(context.Background(), st, name, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// verifyChain checks that v chains to Pebble's root and covers names.
func verifyChain(t *testing.T, v *store.Version, names []string) *x509.Certificate {
	t.Helper()
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	if !inter.AppendCertsFromPEM(v.ChainPEM) {
		t.Fatalf("chain.pem holds no certificate")
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: strings.Replace(n, "*", "x", 1), Roots: pebble.Roots(t, 0), Intermediates: inter}); err != nil {
			t.Errorf("certificate for %s does not verify against Pebble's root: %v", n, err)
		}
	}
	return leaf
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// newOrders returns how many newOrder requests Pebble served since the last
// Reset.
func newOrders() int {
	counts, _ := pebble.Counter().Snapshot()
	return counts["POST /order-plz"]
}

const solverCerts = `
[[certificate]]
name = "alpn"
domains = ["alpn.example.com"]
solver = "standalone"
challenge = "tls-alpn-01"
scripts = ["events.lua"]
[certificate.output]
key = "out/alpn.key.pem"
fullchain = "out/alpn.fullchain.pem"

[[certificate]]
name = "web"
domains = ["www.example.com", "example.com"]
key_type = "rsa2048"
solver = "webroot"
scripts = ["events.lua"]

[[certificate]]
name = "wild"
domains = ["*.example.net"]
key_type = "ec384"
solver = "dnsexec"
scripts = ["events.lua"]

[[certificate]]
name = "mixed"
domains = ["*.example.org", "example.org"]
solver = "dnsexec"
scripts = ["events.lua"]
[certificate.solvers]
"example.org" = "webroot"
`

// TestRun issues one certificate per solver and one mixing webroot and
// dnsexec in one run, checks what was stored, written and raised, then
// runs again and checks that nothing is ordered.
func TestRun(t *testing.T) {
	e := newEnv(t)
	if err := os.Mkdir(filepath.Join(e.work.Dir, "out"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := e.write(solverCerts)
	pebble.Counter().Reset()
	res := e.run(cfg, RunOptions{})
	if got := newOrders(); got != 4 {
		t.Errorf("newOrder requests = %d, want 4", got)
	}
	for _, cert := range cfg.Certificates {
		t.Run(cert.Name, func(t *testing.T) {
			r := res[cert.Name]
			if r.Err != nil || r.Action != ActionIssued {
				t.Fatalf("result = %s %v, want issued", r.Action, r.Err)
			}
			v := e.current(cfg, cert.Name)
			leaf := verifyChain(t, v, cert.Domains)
			if got := keyType(leaf.PublicKey); got != cert.KeyType {
				t.Errorf("key type = %s, want %s", got, cert.KeyType)
			}
			keyPath := filepath.Join(cfg.Storage, "certificates", cert.Name, "current", "key.pem")
			if m := fileMode(t, keyPath); m != 0o600 {
				t.Errorf("stored key mode = %v, want 0600", m)
			}
			ev := e.event(cert.Name + ".issued")
			if ev["serial"] != leaf.SerialNumber.Text(16) || ev["cert_name"] != cert.Name {
				t.Errorf("issued event serial, cert_name = %v, %v; want %s, %s", ev["serial"], ev["cert_name"], leaf.SerialNumber.Text(16), cert.Name)
			}
			if ev["key_path"] != filepath.Join(cfg.Storage, "certificates", cert.Name, "versions", v.ID, "key.pem") {
				t.Errorf("issued event key_path = %v", ev["key_path"])
			}
			if int64(ev["not_after"].(float64)) != leaf.NotAfter.Unix() {
				t.Errorf("issued event not_after = %v, want %d", ev["not_after"], leaf.NotAfter.Unix())
			}
			if ev["fullchain_pem"] != string(v.Fullchain()) {
				t.Errorf("issued event fullchain_pem differs from the stored fullchain")
			}
			if ev["cert_pem"] != string(v.CertPEM) || ev["chain_pem"] != string(v.ChainPEM) {
				t.Errorf("issued event cert_pem or chain_pem differs from the stored files")
			}
			var wantProfile any // nil in Lua when no profile was asked for
			if v.Info.Profile != "" {
				wantProfile = v.Info.Profile
			}
			if ev["issuer"] != leaf.Issuer.String() || int64(ev["not_before"].(float64)) != leaf.NotBefore.Unix() || ev["profile"] != wantProfile {
				t.Errorf("issued event issuer, not_before, profile = %v, %v, %v; want %s, %d, %q", ev["issuer"], ev["not_before"], ev["profile"], leaf.Issuer, leaf.NotBefore.Unix(), v.Info.Profile)
			}
			if ev["var_marker"] != "from-acmehook.toml" {
				t.Errorf("acmehook.vars.marker in the script = %v, want the [lua.vars] value from acmehook.toml", ev["var_marker"])
			}
			for _, id := range cert.Identifiers {
				for _, kind := range []string{"challenge-provision", "challenge-cleanup"} {
					ch := e.event(cert.Name + "." + kind + "." + id.Value)["challenge"].(map[string]any)
					want := "http-01"
					switch cert.SolverFor(id) {
					case "standalone":
						want = "tls-alpn-01"
					case "dnsexec":
						want = "dns-01"
					}
					if ch["type"] != want || ch["identifier"] != id.Value || ch["key_authorization"] == nil {
						t.Errorf("%s event for %s: challenge = %v, want type %s", kind, id.Value, ch, want)
					}
					if want == "dns-01" && ch["dns_value"] == nil {
						t.Errorf("%s event for %s has no dns_value", kind, id.Value)
					}
				}
			}
		})
	}
	t.Run("output", func(t *testing.T) {
		if m := fileMode(t, filepath.Join(e.work.Dir, "out", "alpn.key.pem")); m != 0o600 {
			t.Errorf("output key mode = %v, want 0600", m)
		}
		fc, err := os.ReadFile(filepath.Join(e.work.Dir, "out", "alpn.fullchain.pem"))
		if err != nil || string(fc) != string(e.current(cfg, "alpn").Fullchain()) {
			t.Errorf("output fullchain differs from the stored one (%v)", err)
		}
	})
	t.Run("second run orders nothing", func(t *testing.T) {
		pebble.Counter().Reset()
		res := e.run(cfg, RunOptions{})
		for name, r := range res {
			if r.Action != ActionNone || r.Err != nil {
				t.Errorf("%s: second run = %s %v, want none", name, r.Action, r.Err)
			}
		}
		if counts, total := pebble.Counter().Snapshot(); total != 0 {
			t.Errorf("second run made %d requests to the CA (%v), want 0", total, counts)
		}
	})
}

// TestReissue changes a certificate's names, then moves the clock past its
// renewal time, then forces it: each orders a new certificate raised as
// renew with the previous serial.
func TestReissue(t *testing.T) {
	e := newEnv(t)
	cert := func(domains string) string {
		return fmt.Sprintf("[[certificate]]\nname = \"site\"\ndomains = [%s]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n", domains)
	}
	cfg := e.write(cert(`"a.example.com"`))
	if r := e.run(cfg, RunOptions{})["site"]; r.Action != ActionIssued {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	steps := []struct {
		name    string
		domains string
		due     bool // move the clock to 90% of the current certificate's lifetime, past the end of the ARI window Pebble sends for either of its profiles (68% of 90 days, 83% of 6 days)
		opts    RunOptions
		reason  string
	}{
		{"names changed", `"a.example.com", "b.example.com"`, false, RunOptions{}, "names changed"},
		{"due by the ARI window", `"a.example.com", "b.example.com"`, true, RunOptions{}, "ARI window"},
		{"forced", `"a.example.com", "b.example.com"`, false, RunOptions{Names: []string{"site"}, Force: true}, "forced"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			prev := e.current(cfg, "site")
			cfg = e.write(cert(s.domains))
			if s.due {
				at := prev.Info.NotBefore.Add(prev.Info.NotAfter.Sub(prev.Info.NotBefore) * 9 / 10)
				e.now = func() time.Time { return at }
				defer func() { e.now = nil }()
			}
			pebble.Counter().Reset()
			r := e.run(cfg, s.opts)["site"]
			if r.Action != ActionRenewed || r.Err != nil {
				t.Fatalf("run = %s %v, want renewed", r.Action, r.Err)
			}
			if !strings.Contains(r.Reason, s.reason) {
				t.Errorf("reason = %q, want it to mention %q", r.Reason, s.reason)
			}
			if got := newOrders(); got != 1 {
				t.Errorf("newOrder requests = %d, want 1", got)
			}
			v := e.current(cfg, "site")
			verifyChain(t, v, cfg.Certificates[0].Domains)
			ev := e.event("site.renew")
			if ev["previous_serial"] != prev.Info.Serial || ev["serial"] != v.Info.Serial {
				t.Errorf("renew event serials = %v (previous %v), want %s (previous %s)", ev["serial"], ev["previous_serial"], v.Info.Serial, prev.Info.Serial)
			}
		})
	}
}

// TestFailureBesideSuccess: a certificate whose http-01 files are not
// served fails with the CA's problem, raised to its failed script, while
// the other certificate of the run is issued.
func TestFailureBesideSuccess(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "good"
domains = ["good.example.com"]
solver = "webroot"
scripts = ["events.lua"]

[[certificate]]
name = "bad"
domains = ["bad.example.com"]
solver = "unserved"
self_check = false # let the CA find out
scripts = ["events.lua"]
`)
	res := e.run(cfg, RunOptions{})
	if r := res["good"]; r.Action != ActionIssued || r.Err != nil {
		t.Errorf("good = %s %v, want issued", r.Action, r.Err)
	}
	bad := res["bad"]
	p := problemOf(bad.Err)
	if bad.Action != ActionFailed || p == nil || p.Type != "urn:ietf:params:acme:error:unauthorized" {
		t.Fatalf("bad = %s %v (problem %+v), want failed with an unauthorized problem", bad.Action, bad.Err, p)
	}
	if !strings.Contains(bad.Err.Error(), "bad.example.com") {
		t.Errorf("error %q does not name the identifier", bad.Err)
	}
	evErr := e.event("bad.failed")["error"].(map[string]any)
	if evErr["problem_type"] != p.Type || evErr["problem_detail"] != p.Detail || evErr["message"] == nil {
		t.Errorf("failed event error = %v, want problem %s: %s", evErr, p.Type, p.Detail)
	}
	e.event("bad.challenge-cleanup.bad.example.com") // cleanup raised after the failure
	m := e.meta(cfg, "bad")
	if m.Renewal.Failures != 1 || len(m.Events) == 0 || m.Events[len(m.Events)-1].Name != "failed" {
		t.Errorf("bad metadata = %+v, want one failure recorded", m)
	}
}

// TestPendingDeploy: a deploy script failure keeps the new certificate,
// marks the deploy pending and fails the run; the next run retries the
// deploy without ordering again.
func TestPendingDeploy(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "gated-site"
domains = ["gated.example.com"]
solver = "webroot"
scripts = ["events.lua"]
`)
	r := e.run(cfg, RunOptions{})["gated-site"]
	if r.Action != ActionIssued || !errors.Is(r.Err, ErrDeploy) || !strings.Contains(r.Err.Error(), "deploy target not ready") {
		t.Fatalf("first run = %s %v, want issued with a deploy error from the script", r.Action, r.Err)
	}
	v := e.current(cfg, "gated-site")
	if m := e.meta(cfg, "gated-site"); !m.PendingDeploy {
		t.Fatalf("metadata = %+v, want the deploy pending", m)
	}
	t.Run("still failing", func(t *testing.T) {
		pebble.Counter().Reset()
		r := e.run(cfg, RunOptions{})["gated-site"]
		if !errors.Is(r.Err, ErrDeploy) || newOrders() != 0 {
			t.Errorf("run = %s %v with %d orders, want a deploy error and no order", r.Action, r.Err, newOrders())
		}
	})
	if err := os.WriteFile(e.work.Gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pebble.Counter().Reset()
	r = e.run(cfg, RunOptions{})["gated-site"]
	if r.Action != ActionDeployed || r.Err != nil {
		t.Fatalf("retry = %s %v, want deployed", r.Action, r.Err)
	}
	if counts, total := pebble.Counter().Snapshot(); total != 0 {
		t.Errorf("retry made %d requests to the CA (%v), want 0", total, counts)
	}
	if got := e.current(cfg, "gated-site"); got.ID != v.ID {
		t.Errorf("current version = %s, want %s (the certificate of the first run)", got.ID, v.ID)
	}
	if ev := e.event("gated-site.issued"); ev["serial"] != v.Info.Serial {
		t.Errorf("issued event serial = %v, want %s", ev["serial"], v.Info.Serial)
	}
	if m := e.meta(cfg, "gated-site"); m.PendingDeploy {
		t.Errorf("deploy still pending after a successful retry")
	}
}

// TestVeto: a failing challenge-provision handler stops the certificate
// before the challenge is answered, and cleanup still runs.
func TestVeto(t *testing.T) {
	e := newEnv(t)
	veto := filepath.Join(e.work.Dir, "veto.lua")
	if err := os.WriteFile(veto, []byte(`local acmehook = require("acmehook")
acmehook.on("challenge-provision", function(ev) error("not on my watch: " .. ev.challenge.identifier) end)
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e.write(`
[[certificate]]
name = "vetoed"
domains = ["veto.example.com"]
solver = "webroot"
scripts = ["events.lua", "veto.lua"]
`)
	pebble.Counter().Reset()
	r := e.run(cfg, RunOptions{})["vetoed"]
	if r.Action != ActionFailed || !errors.Is(r.Err, ErrVetoed) || !strings.Contains(r.Err.Error(), "not on my watch: veto.example.com") {
		t.Fatalf("run = %s %v, want failed with the veto", r.Action, r.Err)
	}
	if counts, _ := pebble.Counter().Snapshot(); counts["POST /chalZ/"] != 0 {
		t.Errorf("challenge answered despite the veto: %v", counts)
	}
	e.event("vetoed.challenge-cleanup.veto.example.com")
	if _, err := os.Stat(filepath.Join(webRoot, ".well-known", "acme-challenge")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(webRoot, ".well-known", "acme-challenge"))
		if len(entries) != 0 {
			t.Errorf("challenge files left after cleanup: %d", len(entries))
		}
	}
}

// TestAccount creates the account, shows, updates, rolls its key over (a
// certificate is then issued with the new key) and deactivates it.
func TestAccount(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"acct\"\ndomains = [\"acct.example.com\"]\nsolver = \"webroot\"\n")
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng, err := New(Options{Config: cfg, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := eng.ShowAccount(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ShowAccount before any run = %v, want ErrNotFound", err)
	}
	acct, err := eng.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := eng.ShowAccount(ctx)
	if err != nil || info.Remote.URL != acct.URL || info.Stored.URL != acct.URL || info.Remote.Status != "valid" {
		t.Fatalf("ShowAccount = %+v, %v; want the account %s, valid", info, err, acct.URL)
	}
	if got := info.Remote.Contact; len(got) != 1 || got[0] != "mailto:ops@example.com" {
		t.Errorf("contact = %v, want mailto:ops@example.com", got)
	}

	cfg.CA.Email = []string{"new@example.com"}
	up, err := eng.UpdateAccount(ctx)
	if err != nil || len(up.Contact) != 1 || up.Contact[0] != "mailto:new@example.com" {
		t.Errorf("UpdateAccount = %v, %v; want contact mailto:new@example.com", up.Contact, err)
	}

	oldKey, _ := st.LoadAccount(ctx, cfg.CA.Directory)
	rolled, err := eng.RolloverAccount(ctx)
	if err != nil || rolled.URL != acct.URL {
		t.Fatalf("RolloverAccount = %s, %v; want the same account URL %s", rolled.URL, err, acct.URL)
	}
	newKey, _ := st.LoadAccount(ctx, cfg.CA.Directory)
	if string(newKey.KeyPEM) == string(oldKey.KeyPEM) {
		t.Errorf("stored account key unchanged after rollover")
	}
	if m := fileMode(t, filepath.Join(cfg.Storage, "accounts", store.AccountDirName(cfg.CA.Directory), "key.pem")); m != 0o600 {
		t.Errorf("account key mode = %v, want 0600", m)
	}
	res, err := eng.Run(ctx, RunOptions{})
	if err != nil || !res.OK() {
		t.Fatalf("Run after rollover = %+v, %v", res, err)
	}
	found, err := eng.client.FindAccount(ctx, rolled.Key)
	if err != nil || found.URL != acct.URL {
		t.Errorf("FindAccount(new key) = %s, %v; want %s", found.URL, err, acct.URL)
	}

	if d, err := eng.DeactivateAccount(ctx); err != nil || d.Status != "deactivated" {
		t.Errorf("DeactivateAccount = %q, %v; want deactivated", d.Status, err)
	}
}

// TestInterruptedRollover: a crash between storing a rollover's new key and
// the CA's answer is resolved on the next start by asking the CA which key
// it knows — finished or undone, never a second account (issue 15).
func TestInterruptedRollover(t *testing.T) {
	for _, caChanged := range []bool{false, true} {
		t.Run(fmt.Sprintf("ca changed the key %v", caChanged), func(t *testing.T) {
			e := newEnv(t)
			cfg := e.write("[[certificate]]\nname = \"acct\"\ndomains = [\"acct.example.com\"]\nsolver = \"webroot\"\n")
			st, err := store.Open(cfg.Storage, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			first, err := New(Options{Config: cfg, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			acct, err := first.Account(ctx)
			if err != nil {
				t.Fatal(err)
			}
			oldStored, _ := st.LoadAccount(ctx, cfg.CA.Directory)
			newKey, err := generateKey(cfg.CA.AccountKeyType)
			if err != nil {
				t.Fatal(err)
			}
			newPEM, _ := marshalKeyPEM(newKey)
			// The crash: the intent is stored, the key change maybe sent.
			if err := st.BeginRollover(ctx, cfg.CA.Directory, newPEM); err != nil {
				t.Fatal(err)
			}
			if caChanged {
				if _, err := first.client.ChangeAccountKey(ctx, acct, newKey); err != nil {
					t.Fatal(err)
				}
			}
			first.Close()

			next, err := New(Options{Config: cfg, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			got, err := next.Account(ctx)
			if err != nil || got.URL != acct.URL {
				t.Fatalf("Account after the interrupted rollover = %s, %v; want the same account %s", got.URL, err, acct.URL)
			}
			stored, err := st.LoadAccount(ctx, cfg.CA.Directory)
			if err != nil || stored.PendingKeyPEM != nil {
				t.Fatalf("stored account = %+v, %v; want the rollover resolved", stored, err)
			}
			wantPEM, unknown := oldStored.KeyPEM, crypto.Signer(newKey)
			if caChanged {
				wantPEM, unknown = newPEM, acct.Key
			}
			if !bytes.Equal(stored.KeyPEM, wantPEM) {
				t.Errorf("stored account key is not the key the CA knows")
			}
			// The other key registered nothing.
			if _, err := next.client.FindAccount(ctx, unknown); !errors.Is(err, acme.ErrAccountDoesNotExist) {
				t.Errorf("FindAccount(the key the CA does not know) = %v, want ErrAccountDoesNotExist", err)
			}
			// The previous key after a finished rollover; nothing for a
			// key the CA never registered.
			kept, _ := filepath.Glob(filepath.Join(cfg.Storage, "accounts", store.AccountDirName(cfg.CA.Directory), "key-*.pem.old"))
			if want := map[bool]int{true: 1, false: 0}[caChanged]; len(kept) != want {
				t.Errorf("keys kept beside the account key: %v, want %d", kept, want)
			}
		})
	}
}
