package main

// End-to-end tests: the real acmehook binary and the real plugin binaries,
// built once in TestMain, against an in-process Pebble. Every test writes an
// acmehook.toml, runs the binary with exec.Command and checks what a user
// would see: exit status, stdout and stderr, files and their modes,
// certificate chains, what the Lua scripts received, and the requests the
// CA served.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/internal/testenv"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// Shared by every test of the package, set up by TestMain.
var (
	tenv    *testenv.Env
	pebble  *pebbletest.Server
	bins    map[string]string // acmehook, webroot, standalone, dnsexec, challtestsrv-dns
	webRoot string            // served on 127.0.0.1:pebble.HTTPPort
	holds   = &holdHandler{}  // lets a test hold http-01 validations of a host
)

func TestMain(m *testing.M) {
	if code, ok := engine.ChildMain(); ok { // the test binary is its own Lua script host
		os.Exit(code)
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	te, err := testenv.Start(func(h http.Handler) http.Handler {
		holds.next = h
		return holds
	}, "github.com/acmehook/acmehook/cmd/acmehook")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer te.Close()
	tenv, pebble, bins, webRoot = te, te.Pebble, te.Bins, te.WebRoot
	return m.Run()
}

// holdHandler serves the webroot, except that requests for a held host
// wait until the hold is released.
type holdHandler struct {
	next http.Handler
	mu   sync.Mutex
	held map[string]*hold
}

type hold struct {
	arrived chan struct{} // closed by the first request for the host
	release chan struct{}
	once    sync.Once // closes arrived
	freed   sync.Once // closes release
}

// Release lets the held requests through; calling it again does nothing.
func (hd *hold) Release() { hd.freed.Do(func() { close(hd.release) }) }

// holdArrival bounds how long a test waits for the held request.
const holdArrival = 30 * time.Second

// Arrived waits, at most holdArrival, for the first held request, and
// reports whether it came.
func (hd *hold) Arrived() bool {
	select {
	case <-hd.arrived:
		return true
	case <-time.After(holdArrival):
		return false
	}
}

// hold makes validation requests for host wait; the returned hold says
// when the first one arrived, and Release (at the latest when t ends)
// lets them through.
func (h *holdHandler) hold(t testing.TB, host string) *hold {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held == nil {
		h.held = map[string]*hold{}
	}
	hd := &hold{arrived: make(chan struct{}), release: make(chan struct{})}
	h.held[host] = hd
	t.Cleanup(hd.Release)
	return hd
}

func (h *holdHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	h.mu.Lock()
	hd := h.held[host]
	h.mu.Unlock()
	if hd != nil {
		hd.once.Do(func() { close(hd.arrived) })
		select {
		case <-hd.release:
		case <-r.Context().Done():
			return
		}
	}
	h.next.ServeHTTP(w, r)
}

// site is one test's configuration directory.
type site struct {
	t      testing.TB
	work   testenv.Workdir // events.lua, its events, the gate, a webroot nobody serves
	config string          // path of acmehook.toml
	text   string          // its content
}

func newSite(t testing.TB) *site {
	t.Helper()
	w := testenv.NewWorkdir(t)
	return &site{t: t, work: w, config: filepath.Join(w.Dir, "acmehook.toml")}
}

// baseConfig is the storage, [ca] and [plugins] part shared by the tests;
// "unserved" is a webroot plugin whose files nobody serves.
func baseConfig(unserved string) string {
	return fmt.Sprintf(`storage = "storage"

[ca]
directory = %q
ca_bundle = %q
email = ["ops@example.com"]
agree_tos = true

# Check challenges where Pebble's VA does, resolving through its DNS.
[self_check]
http_port = %d
tls_port = %d
resolvers = [%q]
%s`, pebble.DirectoryURL, pebble.CAFile,
		pebble.HTTPPort, pebble.TLSPort, pebble.DNSAddr,
		tenv.PluginsConfig(unserved))
}

// write writes acmehook.toml: the base configuration and then extra.
func (s *site) write(extra string) {
	s.t.Helper()
	s.text = baseConfig(s.work.Unserved) + extra
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// line returns the 1-based line of acmehook.toml holding substr.
func (s *site) line(substr string) int {
	s.t.Helper()
	i := strings.Index(s.text, substr)
	if i < 0 {
		s.t.Fatalf("%q not in the configuration", substr)
	}
	return strings.Count(s.text[:i], "\n") + 1
}

// outcome is one finished acmehook process.
type outcome struct {
	code           int
	stdout, stderr string
	rusage         *syscall.Rusage
	elapsed        time.Duration
}

func (o outcome) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
}

// acmehook runs the binary with --config and args and waits for it.
func (s *site) acmehook(args ...string) outcome {
	s.t.Helper()
	cmd := s.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := outcome{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		s.t.Fatalf("running acmehook %s: %v", strings.Join(args, " "), err)
	}
	o.code = cmd.ProcessState.ExitCode()
	o.rusage, _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return o
}

// command returns the acmehook command, started from a directory other
// than the configuration's and killed after a minute.
func (s *site) command(args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bins["acmehook"], append([]string{"--config", s.config}, args...)...)
	cmd.Dir = os.TempDir()
	return cmd
}

// event returns what events.lua recorded under name.
func (s *site) event(name string) map[string]any {
	s.t.Helper()
	return s.work.Event(s.t, name)
}

// stored returns the current certificate of name from the storage, checked
// to chain to Pebble's root for each of names, and the fullchain PEM.
func (s *site) stored(name string, names []string) (*x509.Certificate, []byte) {
	s.t.Helper()
	cur := filepath.Join(s.work.Dir, "storage", "certificates", name, "current")
	certPEM, err := os.ReadFile(filepath.Join(cur, "cert.pem"))
	if err != nil {
		s.t.Fatalf("certificate %s not stored: %v", name, err)
	}
	chainPEM, err := os.ReadFile(filepath.Join(cur, "chain.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil {
		s.t.Fatalf("%s: cert.pem holds no PEM block", name)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		s.t.Fatal(err)
	}
	inter := x509.NewCertPool()
	if !inter.AppendCertsFromPEM(chainPEM) {
		s.t.Fatalf("%s: chain.pem holds no certificate", name)
	}
	roots := pebble.Roots(s.t, 0)
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: strings.Replace(n, "*", "any", 1), Roots: roots, Intermediates: inter}); err != nil {
			s.t.Errorf("%s: certificate does not verify for %s against Pebble's root: %v", name, n, err)
		}
	}
	return leaf, append(certPEM, chainPEM...)
}

// resultLine returns the line of run's result table for cert.
func resultLine(o outcome, cert string) string {
	for _, l := range strings.Split(o.stdout, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == cert {
			return l
		}
	}
	return ""
}

// newOrders returns the newOrder requests Pebble served since the last
// Reset.
func newOrders() int {
	counts, _ := pebble.Counter().Snapshot()
	return counts["POST /order-plz"]
}

// TestE2EAllSolvers issues one certificate per solver (standalone
// tls-alpn-01, webroot http-01, dnsexec dns-01 for a wildcard) and one
// mixing dnsexec and webroot in one run of the binary, and checks the
// stored chains, the output copies, the data the Lua script received and
// the file modes on disk. A second run sends no request to the CA.
func TestE2EAllSolvers(t *testing.T) {
	s := newSite(t)
	if err := os.Mkdir(filepath.Join(s.work.Dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.write(`
[[certificate]]
name = "alpn"
domains = ["alpn.e2e.example.com"]
solver = "standalone"
challenge = "tls-alpn-01"
scripts = ["events.lua"]
[certificate.output]
key = "out/alpn.key.pem"
fullchain = "out/alpn.fullchain.pem"

[[certificate]]
name = "web"
domains = ["www.e2e.example.com", "e2e.example.com"]
key_type = "rsa2048"
solver = "webroot"
scripts = ["events.lua"]

[[certificate]]
name = "wild"
domains = ["*.e2e.example.net"]
key_type = "ec384"
solver = "dnsexec"
scripts = ["events.lua"]

[[certificate]]
name = "mixed"
domains = ["*.e2e.example.org", "e2e.example.org"]
solver = "dnsexec"
scripts = ["events.lua"]
[certificate.solvers]
"e2e.example.org" = "webroot"
`)
	pebble.Counter().Reset()
	o := s.acmehook("run")
	if o.code != 0 {
		t.Fatalf("acmehook run: %s", o)
	}
	if got := newOrders(); got != 4 {
		t.Errorf("newOrder requests = %d, want 4", got)
	}
	certs := []struct {
		name    string
		domains []string
		key     string            // public key algorithm and size
		types   map[string]string // identifier -> challenge type
	}{
		{"alpn", []string{"alpn.e2e.example.com"}, "ECDSA P-256", map[string]string{"alpn.e2e.example.com": "tls-alpn-01"}},
		{"web", []string{"www.e2e.example.com", "e2e.example.com"}, "RSA 2048", map[string]string{"www.e2e.example.com": "http-01", "e2e.example.com": "http-01"}},
		{"wild", []string{"*.e2e.example.net"}, "ECDSA P-384", map[string]string{"*.e2e.example.net": "dns-01"}},
		{"mixed", []string{"*.e2e.example.org", "e2e.example.org"}, "ECDSA P-256", map[string]string{"*.e2e.example.org": "dns-01", "e2e.example.org": "http-01"}},
	}
	for _, c := range certs {
		t.Run(c.name, func(t *testing.T) {
			if l := resultLine(o, c.name); !strings.Contains(l, " issued ") {
				t.Errorf("result line = %q, want issued", l)
			}
			leaf, fullchain := s.stored(c.name, c.domains)
			if got := keyDesc(leaf); got != c.key {
				t.Errorf("certificate key = %s, want %s", got, c.key)
			}
			ev := s.event(c.name + ".issued")
			serial := leaf.SerialNumber.Text(16)
			if ev["serial"] != serial || ev["cert_name"] != c.name || ev["name"] != "issued" {
				t.Errorf("issued event serial, cert_name, name = %v, %v, %v; want %s, %s, issued", ev["serial"], ev["cert_name"], ev["name"], serial, c.name)
			}
			if got := fmt.Sprint(ev["domains"]); got != fmt.Sprint(c.domains) {
				t.Errorf("issued event domains = %s, want %v", got, c.domains)
			}
			if int64(ev["not_after"].(float64)) != leaf.NotAfter.Unix() {
				t.Errorf("issued event not_after = %v, want %d", ev["not_after"], leaf.NotAfter.Unix())
			}
			if ev["fullchain_pem"] != string(fullchain) {
				t.Errorf("issued event fullchain_pem differs from the stored cert.pem + chain.pem")
			}
			if kp, _ := ev["key_path"].(string); kp == "" || !strings.HasPrefix(kp, filepath.Join(s.work.Dir, "storage")) {
				t.Errorf("issued event key_path = %v, want a path in the storage", ev["key_path"])
			} else if b, err := os.ReadFile(kp); err != nil || !bytes.Contains(b, []byte("PRIVATE KEY")) {
				t.Errorf("issued event key_path %s: no private key there (%v)", kp, err)
			}
			for id, typ := range c.types {
				for _, kind := range []string{"challenge-provision", "challenge-cleanup"} {
					ch, _ := s.event(c.name + "." + kind + "." + id)["challenge"].(map[string]any)
					ka, _ := ch["key_authorization"].(string)
					token, _ := ch["token"].(string)
					if ch["type"] != typ || ch["identifier"] != id || token == "" || !strings.HasPrefix(ka, token+".") {
						t.Errorf("%s event for %s: challenge = %v, want type %s with a key authorization for its token", kind, id, ch, typ)
					}
					if typ == "dns-01" {
						sum := sha256.Sum256([]byte(ka))
						want := base64.RawURLEncoding.EncodeToString(sum[:])
						if ch["dns_value"] != want || ch["dns_name"] != "_acme-challenge."+strings.TrimPrefix(id, "*.")+"." {
							t.Errorf("%s event for %s: dns_name, dns_value = %v, %v; want _acme-challenge name and %s", kind, id, ch["dns_name"], ch["dns_value"], want)
						}
					}
				}
			}
		})
	}
	t.Run("output copies", func(t *testing.T) {
		_, fullchain := s.stored("alpn", nil)
		if b, err := os.ReadFile(filepath.Join(s.work.Dir, "out", "alpn.fullchain.pem")); err != nil || !bytes.Equal(b, fullchain) {
			t.Errorf("out/alpn.fullchain.pem differs from the stored fullchain (%v)", err)
		}
		stored, _ := os.ReadFile(filepath.Join(s.work.Dir, "storage", "certificates", "alpn", "current", "key.pem"))
		if b, err := os.ReadFile(filepath.Join(s.work.Dir, "out", "alpn.key.pem")); err != nil || !bytes.Equal(b, stored) {
			t.Errorf("out/alpn.key.pem differs from the stored key (%v)", err)
		}
		if m := mode(t, filepath.Join(s.work.Dir, "out", "alpn.key.pem")); m != 0o600 {
			t.Errorf("out/alpn.key.pem mode = %v, want 0600", m)
		}
		if m := mode(t, filepath.Join(s.work.Dir, "out", "alpn.fullchain.pem")); m != 0o644 {
			t.Errorf("out/alpn.fullchain.pem mode = %v, want 0644", m)
		}
	})
	t.Run("modes on disk", func(t *testing.T) {
		checkModes(t, filepath.Join(s.work.Dir, "storage"))
	})
	t.Run("second run", func(t *testing.T) {
		pebble.Counter().Reset()
		o := s.acmehook("run")
		if o.code != 0 {
			t.Fatalf("second acmehook run: %s", o)
		}
		for _, c := range certs {
			if l := resultLine(o, c.name); !strings.Contains(l, " current ") {
				t.Errorf("result line for %s = %q, want current", c.name, l)
			}
		}
		if counts, total := pebble.Counter().Snapshot(); total != 0 {
			t.Errorf("second run sent %d requests to the CA (%v), want none", total, counts)
		}
	})
}

// keyDesc describes a certificate's public key: "RSA 2048", "ECDSA P-256".
func keyDesc(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// checkModes walks the storage: every directory must be 0700 and every file
// holding a private key 0600.
func checkModes(t *testing.T, root string) {
	t.Helper()
	var dirs, keys int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs++
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("directory %s mode = %v, want 0700", path, fi.Mode().Perm())
			}
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			keys++
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file %s mode = %v, want 0600", path, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if dirs < 3 || keys < 2 {
		t.Errorf("walked %d directories and %d key files under %s, want an account key and certificate keys", dirs, keys, root)
	}
}

// TestE2EReissueOnConfigChange changes the configuration between runs: new
// names, then a new key type, each make the next run order a certificate
// that is raised as renew with the previous serial.
func TestE2EReissueOnConfigChange(t *testing.T) {
	s := newSite(t)
	cert := func(domains, keyType string) string {
		return fmt.Sprintf("[[certificate]]\nname = \"site\"\ndomains = [%s]\nkey_type = %q\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n", domains, keyType)
	}
	s.write(cert(`"a.reissue.example.com"`, "ec256"))
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("first run: %s", o)
	}
	steps := []struct {
		name    string
		domains []string
		keyType string
		key     string
		reason  string
	}{
		{"names changed", []string{"a.reissue.example.com", "b.reissue.example.com"}, "ec256", "ECDSA P-256", "names changed"},
		{"key type changed", []string{"a.reissue.example.com", "b.reissue.example.com"}, "rsa2048", "RSA 2048", "key type changed"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			prev, _ := s.stored("site", nil)
			s.write(cert(`"`+strings.Join(st.domains, `", "`)+`"`, st.keyType))
			pebble.Counter().Reset()
			o := s.acmehook("run")
			if o.code != 0 {
				t.Fatalf("run: %s", o)
			}
			if l := resultLine(o, "site"); !strings.Contains(l, " renewed ") {
				t.Errorf("result line = %q, want renewed", l)
			}
			if !strings.Contains(o.stderr, st.reason) {
				t.Errorf("log does not give the reason %q:\n%s", st.reason, o.stderr)
			}
			if got := newOrders(); got != 1 {
				t.Errorf("newOrder requests = %d, want 1", got)
			}
			leaf, _ := s.stored("site", st.domains)
			if got := keyDesc(leaf); got != st.key {
				t.Errorf("certificate key = %s, want %s", got, st.key)
			}
			ev := s.event("site.renew")
			if ev["previous_serial"] != prev.SerialNumber.Text(16) || ev["serial"] != leaf.SerialNumber.Text(16) {
				t.Errorf("renew event serial, previous_serial = %v, %v; want %s, %s", ev["serial"], ev["previous_serial"], leaf.SerialNumber.Text(16), prev.SerialNumber.Text(16))
			}
		})
	}
}

// TestE2EHeldConfigChange changes the key type while the reissue guard is
// full: run holds the new order and says until when, and list and explain
// give that same time (they used to show the old certificate's renewal).
func TestE2EHeldConfigChange(t *testing.T) {
	s := newSite(t)
	cert := func(keyType string) string {
		return fmt.Sprintf("[[certificate]]\nname = \"held\"\ndomains = [\"held.example.com\"]\nkey_type = %q\nsolver = \"webroot\"\nmax_orders = 1\nmax_orders_window = \"24h\"\n", keyType)
	}
	s.write(cert("ec256"))
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("first run: %s", o)
	}
	s.write(cert("rsa2048"))
	o := s.acmehook("run")
	l := resultLine(o, "held")
	if o.code != 0 || !strings.Contains(l, " held ") || !strings.Contains(l, "key type changed from ec256") {
		t.Fatalf("run after the key type change: result line %q, want held for the key type\n%s", l, o)
	}
	m := regexp.MustCompile(`next order allowed at (\d{4}-\d\d-\d\d \d\d:\d\d UTC)`).FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("run's result line %q does not say until when", l)
	}
	until := m[1]
	if o := s.acmehook("list"); o.code != 0 || !strings.Contains(resultLine(o, "held"), until+" (held: key type changed from ec256") {
		t.Errorf("list: line %q, want the held time %s of run\n%s", resultLine(o, "held"), until, o)
	}
	if o := s.acmehook("explain", "held"); o.code != 0 || !strings.Contains(o.stdout, "next run: hold until "+until+": key type changed from ec256") {
		t.Errorf("explain does not give run's held time %s:\n%s", until, o)
	}
}

// TestE2EFailureBesideSuccess runs a certificate whose http-01 files nobody
// serves (self-check off, so the CA's validation fails) beside a good one:
// the run exits 1 naming the failed certificate and the CA's problem, the
// failed event carries the problem, and the good certificate is stored.
func TestE2EFailureBesideSuccess(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "good"
domains = ["good.fail.example.com"]
solver = "webroot"
scripts = ["events.lua"]

[[certificate]]
name = "bad"
domains = ["bad.fail.example.com"]
solver = "unserved"
self_check = false
scripts = ["events.lua"]
`)
	o := s.acmehook("run")
	if o.code != 1 {
		t.Fatalf("run exit = %d, want 1\n%s", o.code, o)
	}
	if l := resultLine(o, "good"); !strings.Contains(l, " issued ") {
		t.Errorf("good: result line = %q, want issued", l)
	}
	if l := resultLine(o, "bad"); !strings.Contains(l, " failed ") || !strings.Contains(l, "bad.fail.example.com") {
		t.Errorf("bad: result line = %q, want failed naming the identifier", l)
	}
	for _, want := range []string{
		"1 of 2 certificates need attention: bad",
		"cert=bad",
		"problem_type=urn:ietf:params:acme:error:unauthorized",
	} {
		if !strings.Contains(o.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, o.stderr)
		}
	}
	s.stored("good", []string{"good.fail.example.com"})
	if _, err := os.Stat(filepath.Join(s.work.Dir, "storage", "certificates", "bad", "current")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("bad has a current certificate (stat: %v)", err)
	}
	e, _ := s.event("bad.failed")["error"].(map[string]any)
	if e["problem_type"] != "urn:ietf:params:acme:error:unauthorized" || e["problem_detail"] == "" || e["message"] == "" {
		t.Errorf("failed event error = %v, want the CA's unauthorized problem", e)
	}
	s.event("bad.challenge-cleanup.bad.fail.example.com") // cleanup follows the failure
}

// TestE2EPendingDeploy: the deploy script fails after a good issuance. The
// certificate is kept and the run exits 1; the next runs retry the deploy
// without a new order until it succeeds.
func TestE2EPendingDeploy(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "gated-site"
domains = ["gated.e2e.example.com"]
solver = "webroot"
scripts = ["events.lua"]
`)
	o := s.acmehook("run")
	if o.code != 1 || !strings.Contains(resultLine(o, "gated-site"), "issued, deploy failed") || !strings.Contains(o.stdout+o.stderr, "deploy target not ready") {
		t.Fatalf("first run: want exit 1, issued with a failed deploy and the script's error\n%s", o)
	}
	leaf, _ := s.stored("gated-site", []string{"gated.e2e.example.com"})
	if l := s.acmehook("list"); !strings.Contains(l.stdout, "deploy pending") {
		t.Errorf("acmehook list does not show the pending deploy:\n%s", l)
	}
	t.Run("still failing", func(t *testing.T) {
		pebble.Counter().Reset()
		o := s.acmehook("run")
		if o.code != 1 || newOrders() != 0 {
			t.Errorf("run: exit %d with %d new orders, want 1 and none\n%s", o.code, newOrders(), o)
		}
	})
	if err := os.WriteFile(s.work.Gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pebble.Counter().Reset()
	o = s.acmehook("run")
	if o.code != 0 || !strings.Contains(resultLine(o, "gated-site"), " deployed ") {
		t.Fatalf("retry: want exit 0 and deployed\n%s", o)
	}
	if counts, total := pebble.Counter().Snapshot(); total != 0 {
		t.Errorf("retry sent %d requests to the CA (%v), want none", total, counts)
	}
	again, _ := s.stored("gated-site", nil)
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("current serial = %x, want %x (the certificate of the first run)", again.SerialNumber, leaf.SerialNumber)
	}
	if ev := s.event("gated-site.issued"); ev["serial"] != leaf.SerialNumber.Text(16) {
		t.Errorf("retried issued event serial = %v, want %x", ev["serial"], leaf.SerialNumber)
	}
	if o := s.acmehook("run"); o.code != 0 || !strings.Contains(resultLine(o, "gated-site"), " current ") {
		t.Errorf("run after the retry: want exit 0 and current\n%s", o)
	}
}

// TestE2ELock starts one acmehook whose validation is held, then a second
// on the same storage: the second stops at once naming the first as the
// holder; the first finishes normally once released.
func TestE2ELock(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "locked"
domains = ["lock.e2e.example.com"]
solver = "webroot"
`)
	hd := holds.hold(t, "lock.e2e.example.com")
	defer hd.Release()
	first := s.command("run")
	var out1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	if !hd.Arrived() {
		t.Fatal("the first acmehook never fetched its http-01 response")
	}
	second := s.acmehook("run")
	hd.Release()
	err := first.Wait()
	if second.code != 1 {
		t.Errorf("second acmehook: exit %d, want 1\n%s", second.code, second)
	}
	want := fmt.Sprintf("held by pid %d on ", first.Process.Pid)
	if !strings.Contains(second.stderr, "locked") || !strings.Contains(second.stderr, want) {
		t.Errorf("second acmehook stderr = %q, want it to say the storage is locked and %q", second.stderr, want)
	}
	if err != nil {
		t.Fatalf("first acmehook: %v\n%s", err, &out1)
	}
	s.stored("locked", []string{"lock.e2e.example.com"})
	if o := s.acmehook("run"); o.code != 0 {
		t.Errorf("run after the first finished: %s", o)
	}
}

// TestE2EBadConfig runs acmehook on invalid configurations: it exits 2
// with every problem as file:line: key: message, before touching the
// storage or the CA.
func TestE2EBadConfig(t *testing.T) {
	type problem struct{ at, key, msg string } // at: text on the line
	tests := []struct {
		name     string
		certs    string
		args     []string
		problems []problem
	}{
		{
			name:  "unknown keys and invalid values together",
			certs: "[[certificate]]\nname = \"a\"\ndomains = [\"a..example.com\"]\nsolver = \"webroot\"\nsolvr = \"dnsexec\"\n",
			args:  []string{"run"},
			problems: []problem{
				{`domains = ["a..example.com"]`, "certificate[0].domains[0]", `"a..example.com" is not a valid domain name (label "")`},
				{`solvr =`, "certificate[0].solvr", "unknown key"},
			},
		},
		{
			name:  "wrong types beside other problems",
			certs: "[[certificate]]\nname = \"a\"\ndomains = [\"a_b.example.com\"]\nsolver = \"webroot\"\nreuse_key = \"yes\"\nscripts = \"events.lua\"\n",
			args:  []string{"run"},
			problems: []problem{
				{`domains = ["a_b.example.com"]`, "certificate[0].domains[0]", `"a_b.example.com" is not a valid domain name (label "a_b")`},
				{`reuse_key =`, "certificate[0].reuse_key", "incompatible types: TOML value has type string; destination has type boolean"},
				{`scripts =`, "certificate[0].scripts", "incompatible types: TOML value has type string; destination has type array"},
			},
		},
		{
			name:     "bad duration",
			certs:    "[[certificate]]\nname = \"a\"\ndomains = [\"a.example.com\"]\nsolver = \"webroot\"\nscript_timeout = \"30 seconds\"\n",
			args:     []string{"run"},
			problems: []problem{{`script_timeout =`, "script_timeout", `invalid duration "30 seconds" (use a number with a unit, e.g. "30s" or "720h")`}},
		},
		{
			name:  "duplicate names",
			certs: "[[certificate]]\nname = \"site\"\ndomains = [\"a.example.com\"]\nsolver = \"webroot\"\n[[certificate]]\nname = \"site\" # again\ndomains = [\"b.example.com\"]\nsolver = \"webroot\"\n",
			args:  []string{"run"},
			problems: []problem{
				{`name = "site" # again`, "certificate[1].name", `"site" is already the name of certificate[0]`},
			},
		},
		{
			name:  "impossible challenges",
			certs: "[[certificate]]\nname = \"wild\"\ndomains = [\"*.example.com\"]\nsolver = \"webroot\"\nchallenge = \"http-01\"\n[[certificate]]\nname = \"ip\"\ndomains = [\"192.0.2.1\"]\nsolver = \"dnsexec\"\nchallenge = \"dns-01\"\n",
			args:  []string{"issue", "wild"},
			problems: []problem{
				{`challenge = "http-01"`, "certificate[0].challenge", "*.example.com cannot be validated by http-01 (wildcards need dns-01)"},
				{`challenge = "dns-01"`, "certificate[1].challenge", "192.0.2.1 cannot be validated by dns-01 (IP addresses need http-01 or tls-alpn-01)"},
			},
		},
		{
			name:  "unknown plugin",
			certs: "[[certificate]]\nname = \"a\"\ndomains = [\"a.example.com\"]\nsolver = \"webroot\"\n[certificate.solvers]\n\"a.example.com\" = \"nosuch\"\n",
			args:  []string{"check"},
			problems: []problem{
				{`"a.example.com" = "nosuch"`, `certificate[0].solvers."a.example.com"`, `no plugin "nosuch" is configured in [plugins]`},
			},
		},
		{
			name:  "wildcard for a solver that offers only http-01",
			certs: "[[certificate]]\nname = \"wild\"\ndomains = [\"*.cap.example.com\"]\nsolver = \"webroot\"\n",
			args:  []string{"check"},
			problems: []problem{
				{`solver = "webroot"` + "\n", "certificate[0].solver", `*.cap.example.com cannot be validated by plugin "webroot", which offers http-01 (wildcards need dns-01)`},
			},
		},
		{
			name:     "syntax error",
			certs:    "[[certificate]]\nname = \"a\"\ndomains = [\"a.example.com\"\n",
			args:     []string{"run"},
			problems: []problem{{`domains = ["a.example.com"`, "certificate.domains", "expected a comma"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			s.write(tt.certs)
			pebble.Counter().Reset()
			o := s.acmehook(tt.args...)
			if o.code != 2 {
				t.Errorf("exit = %d, want 2\n%s", o.code, o)
			}
			for _, p := range tt.problems {
				prefix := fmt.Sprintf("%s:%d: ", s.config, s.line(p.at))
				want := p.key + ": " + p.msg
				found := false
				for _, l := range strings.Split(o.stderr, "\n") {
					found = found || strings.HasPrefix(l, prefix) && strings.Contains(l, want)
				}
				if !found {
					t.Errorf("stderr has no line %q...%q:\n%s", prefix, want, o.stderr)
				}
			}
			if _, total := pebble.Counter().Snapshot(); total != 0 {
				t.Errorf("%d requests to the CA, want none", total)
			}
			if _, err := os.Stat(filepath.Join(s.work.Dir, "storage")); !errors.Is(err, fs.ErrNotExist) && tt.args[0] != "check" {
				t.Errorf("storage created for an invalid configuration (stat: %v)", err)
			}
		})
	}
	t.Run("run refuses an identifier its solver cannot validate", func(t *testing.T) {
		s := newSite(t)
		s.write("[[certificate]]\nname = \"wild\"\ndomains = [\"*.cap.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
		pebble.Counter().Reset()
		o := s.acmehook("run")
		if o.code != 1 || !strings.Contains(o.stdout, `*.cap.example.com cannot be validated by plugin "webroot"`) {
			t.Errorf("want exit 1 and the reason in the result table\n%s", o)
		}
		if _, total := pebble.Counter().Snapshot(); total != 0 {
			t.Errorf("%d requests to the CA, want none", total)
		}
	})
}

// TestE2ESecretsNeverPrinted gives the EAB HMAC key and a plugin secret
// through environment variables and checks that neither appears in
// anything acmehook prints, at debug level: check, a run that uses the
// plugin secret, and a rejected configuration holding an inline secret.
func TestE2ESecretsNeverPrinted(t *testing.T) {
	const hmac, token = "c2VjcmV0LWhtYWMta2V5LXZhbHVl", "s3cret-dns-api-token"
	t.Setenv("ACMEHOOK_E2E_HMAC", hmac)
	t.Setenv("ACMEHOOK_E2E_TOKEN", token)
	tests := []struct {
		name  string
		ca    string // added to [ca]
		args  []string
		code  int
		certs string
	}{
		{"check", "eab_kid = \"kid\"\neab_hmac_key_env = \"ACMEHOOK_E2E_HMAC\"\n", []string{"check", "--log-level", "debug"}, 0, ""},
		{"run", "", []string{"run", "--log-level", "debug"}, 0,
			"[[certificate]]\nname = \"dns\"\ndomains = [\"secret.example.org\"]\nsolver = \"dnsexec\"\n"},
		{"rejected", fmt.Sprintf("eab_kid = \"kid\"\neab_hmac_key = %q\neab_hmac_key_env = \"ACMEHOOK_E2E_HMAC\"\n", hmac), []string{"check", "--log-level", "debug"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			s.write(tt.certs)
			// The plugin secret reaches dnsexec's program as API_TOKEN.
			s.text = strings.Replace(s.text, "env = { CHALLTESTSRV_URL", "env = { API_TOKEN = { secret_env = \"ACMEHOOK_E2E_TOKEN\" }, CHALLTESTSRV_URL", 1)
			s.text = strings.Replace(s.text, "agree_tos = true\n", "agree_tos = true\n"+tt.ca, 1)
			if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
				t.Fatal(err)
			}
			o := s.acmehook(tt.args...)
			if o.code != tt.code {
				t.Fatalf("exit = %d, want %d\n%s", o.code, tt.code, o)
			}
			for _, secret := range []string{hmac, token} {
				if strings.Contains(o.stdout+o.stderr, secret) {
					t.Errorf("output contains the secret %q\n%s", secret, o)
				}
			}
			if tt.code == 2 && !strings.Contains(o.stderr, "set only one of eab_hmac_key") {
				t.Errorf("stderr does not explain the rejection\n%s", o)
			}
		})
	}
}
