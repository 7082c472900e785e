package engine

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// TestCertificateOptions runs against a Pebble that requires external
// account binding and offers an alternate root, and checks that each
// [ca] and [[certificate]] option has its visible effect: the account is
// bound with the EAB key read from the environment (which no log line
// shows) and has the configured key type; every certificate key type
// gives a key of that type; preferred_chain selects the alternate chain;
// reuse_key keeps the key across a forced renewal, and its absence
// changes it. Without EAB the account is refused with the CA's problem.
func TestCertificateOptions(t *testing.T) {
	const kid, hmac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	srv := pebbletest.Start(t, pebbletest.Options{
		EABRequired: true, EABKeys: map[string]string{kid: hmac},
		AlternateRoots: 1, AlwaysValid: true,
	})
	altRoot, _ := pem.Decode(srv.RootPEM(t, 1))
	alt, err := x509.ParseCertificate(altRoot.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ACMEHOOK_TEST_EAB_HMAC", hmac)

	e := newEnv(t)
	e.srv, e.logs = srv, &bytes.Buffer{}
	e.caExtra = fmt.Sprintf("account_key_type = \"ec384\"\neab_kid = %q\neab_hmac_key_env = \"ACMEHOOK_TEST_EAB_HMAC\"", kid)
	var certs strings.Builder
	for _, kt := range []config.KeyType{config.RSA2048, config.RSA3072, config.RSA4096, config.EC256, config.EC384} {
		fmt.Fprintf(&certs, "[[certificate]]\nname = %q\ndomains = [\"%s.opts.example.com\"]\nkey_type = %q\nsolver = \"webroot\"\n", kt, kt, kt)
	}
	certs.WriteString(fmt.Sprintf("[[certificate]]\nname = \"alt\"\ndomains = [\"alt.opts.example.com\"]\nsolver = \"webroot\"\npreferred_chain = %q\n", alt.Subject.CommonName))
	certs.WriteString("[[certificate]]\nname = \"reuse\"\ndomains = [\"reuse.opts.example.com\"]\nsolver = \"webroot\"\nreuse_key = true\n")
	cfg := e.write(certs.String())
	res := e.run(cfg, RunOptions{})
	for _, c := range cfg.Certificates {
		if r := res[c.Name]; r.Action != ActionIssued || r.Err != nil {
			t.Fatalf("%s = %s %v, want issued", c.Name, r.Action, r.Err)
		}
	}

	t.Run("account", func(t *testing.T) {
		st, err := store.Open(cfg.Storage, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		a, err := st.LoadAccount(t.Context(), cfg.CA.Directory)
		if err != nil {
			t.Fatal(err)
		}
		key, err := parseKeyPEM(a.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if got := keyType(key.Public()); got != config.EC384 {
			t.Errorf("account key type = %s, want ec384", got)
		}
		if a.Info.EABKeyID != kid {
			t.Errorf("stored account EAB key ID = %q, want %q", a.Info.EABKeyID, kid)
		}
		if strings.Contains(e.logs.String(), hmac) {
			t.Errorf("the EAB HMAC key appears in the log")
		}
	})
	for _, kt := range []config.KeyType{config.RSA2048, config.RSA3072, config.RSA4096, config.EC256, config.EC384} {
		t.Run("key type "+string(kt), func(t *testing.T) {
			v := e.current(cfg, string(kt))
			leaf, err := parseLeaf(v.CertPEM)
			if err != nil {
				t.Fatal(err)
			}
			if got := keyType(leaf.PublicKey); got != kt {
				t.Errorf("certificate key type = %s, want %s", got, kt)
			}
			key, err := parseKeyPEM(v.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if got := keyType(key.Public()); got != kt {
				t.Errorf("stored key type = %s, want %s", got, kt)
			}
		})
	}
	t.Run("preferred chain", func(t *testing.T) {
		v := e.current(cfg, "alt")
		leaf, err := parseLeaf(v.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		inter := x509.NewCertPool()
		inter.AppendCertsFromPEM(v.ChainPEM)
		altOnly := x509.NewCertPool()
		altOnly.AddCert(alt)
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "alt.opts.example.com", Roots: altOnly, Intermediates: inter}); err != nil {
			t.Errorf("stored chain does not lead to the preferred root %q: %v", alt.Subject.CommonName, err)
		}
		def := e.current(cfg, string(config.EC256))
		inter = x509.NewCertPool()
		inter.AppendCertsFromPEM(def.ChainPEM)
		defLeaf, _ := parseLeaf(def.CertPEM)
		if _, err := defLeaf.Verify(x509.VerifyOptions{DNSName: "ec256.opts.example.com", Roots: altOnly, Intermediates: inter}); err == nil {
			t.Errorf("a certificate without preferred_chain also chains to the alternate root; the test proves nothing")
		}
	})
	t.Run("reuse_key", func(t *testing.T) {
		before := map[string]*store.Version{"reuse": e.current(cfg, "reuse"), "ec256": e.current(cfg, "ec256")}
		res := e.run(cfg, RunOptions{Names: []string{"reuse", "ec256"}, Force: true})
		for name, prev := range before {
			if r := res[name]; r.Action != ActionRenewed || r.Err != nil {
				t.Fatalf("%s forced = %s %v, want renewed", name, r.Action, r.Err)
			}
			now := e.current(cfg, name)
			same := bytes.Equal(now.KeyPEM, prev.KeyPEM)
			if want := name == "reuse"; same != want {
				t.Errorf("%s: key kept across renewal = %v, want %v", name, same, want)
			}
		}
	})
	t.Run("without EAB", func(t *testing.T) {
		e2 := newEnv(t)
		e2.srv = srv
		cfg := e2.write("[[certificate]]\nname = \"noeab\"\ndomains = [\"noeab.opts.example.com\"]\nsolver = \"webroot\"\n")
		r := e2.run(cfg, RunOptions{})["noeab"]
		p := problemOf(r.Err)
		if r.Action != ActionFailed || p == nil || p.Type != "urn:ietf:params:acme:error:externalAccountRequired" {
			t.Fatalf("run = %s %v (problem %+v), want failed with externalAccountRequired", r.Action, r.Err, p)
		}
		if _, err := os.Stat(filepath.Join(cfg.Storage, "certificates", "noeab", "current")); err == nil {
			t.Errorf("a certificate was stored although the account was refused")
		}
	})
}

// TestConcurrencyBound: certificates are processed at most concurrency at
// a time, and the authorizations of one order in parallel: the most
// challenges between presenting and answering at once is exactly what
// the bound allows (so it is used, not just respected).
func TestConcurrencyBound(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
		certs       int // certificates
		names       int // names per certificate
		want        int // challenges in flight at most
	}{
		{"five certificates, concurrency 2", 2, 5, 1, 2},
		{"three names of one order, concurrency 1", 1, 1, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var certs strings.Builder
			for i := range tt.certs {
				var names []string
				for j := range tt.names {
					names = append(names, fmt.Sprintf("%q", fmt.Sprintf("n%d.c%d.bound%d.example.com", j, i, tt.concurrency)))
				}
				fmt.Fprintf(&certs, "[[certificate]]\nname = \"c%d\"\ndomains = [%s]\nsolver = \"webroot\"\n", i, strings.Join(names, ", "))
			}
			cfg := e.write(certs.String())
			cfg.Concurrency = tt.concurrency
			// Each challenge waits, at the accept step, until the bound
			// was reached once (or every challenge has started), so that
			// the figure does not depend on sleeps overlapping on a loaded
			// machine; it gives up after 10 s (a bound that is too low
			// then fails below). Once reached, it stays 50 ms, long enough
			// for a challenge over the bound to be counted.
			var mu sync.Mutex
			inFlight, most, started := 0, 0, 0
			total := tt.certs * tt.names
			hook := func(ctx context.Context, _ *config.Certificate, _ *Plugin, _ sdk.Challenge) error {
				mu.Lock()
				inFlight++
				started++
				most = max(most, inFlight)
				mu.Unlock()
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
					mu.Lock()
					reached := most >= tt.want || started == total
					mu.Unlock()
					if reached {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond)
				mu.Lock()
				inFlight--
				mu.Unlock()
				return nil
			}
			st, err := store.Open(cfg.Storage, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			eng, err := New(Options{Config: cfg, Store: st, beforeAccept: hook})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			res, err := eng.Run(t.Context(), RunOptions{})
			if err != nil || !res.OK() {
				t.Fatalf("Run = %+v, %v", res.Failed(), err)
			}
			if most != tt.want {
				t.Errorf("challenges in flight at once = %d, want %d", most, tt.want)
			}
		})
	}
}

// TestFailedRenewalKeepsCurrent: a forced renewal that the CA refuses
// leaves the current certificate, key and output copies as they were.
func TestFailedRenewalKeepsCurrent(t *testing.T) {
	e := newEnv(t)
	if err := os.Mkdir(filepath.Join(e.work.Dir, "out"), 0o700); err != nil {
		t.Fatal(err)
	}
	cert := "[[certificate]]\nname = \"keep\"\ndomains = [%s]\nsolver = %q\nself_check = false\nscripts = [\"events.lua\"]\n[certificate.output]\nfullchain = \"out/keep.pem\"\n"
	cfg := e.write(fmt.Sprintf(cert, `"keep.example.com"`, "webroot"))
	if r := e.run(cfg, RunOptions{})["keep"]; r.Action != ActionIssued {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	before := e.current(cfg, "keep")
	// The renewal adds a name never validated: Pebble reuses a valid
	// authorization about 1 time in 100 even with PEBBLE_AUTHZREUSE=0
	// (wfe.go: rand.Intn(100) > 0), which would let keep.example.com
	// alone pass without the solver.
	cfg = e.write(fmt.Sprintf(cert, `"keep.example.com", "keep-new.example.com"`, "unserved"))
	r := e.run(cfg, RunOptions{Names: []string{"keep"}, Force: true})["keep"]
	if r.Action != ActionFailed || problemOf(r.Err) == nil {
		t.Fatalf("forced renewal = %s %v, want failed with the CA's problem", r.Action, r.Err)
	}
	after := e.current(cfg, "keep")
	if after.ID != before.ID || !bytes.Equal(after.KeyPEM, before.KeyPEM) || !bytes.Equal(after.CertPEM, before.CertPEM) {
		t.Errorf("current version after a failed renewal = %s, want %s unchanged", after.ID, before.ID)
	}
	if out, err := os.ReadFile(filepath.Join(e.work.Dir, "out", "keep.pem")); err != nil || !bytes.Equal(out, before.Fullchain()) {
		t.Errorf("output copy changed by a failed renewal (%v)", err)
	}
	// The failed event describes the certificate still in service, so an
	// alert can say how urgent the failure is.
	ev := e.event("keep.failed")
	if ev["serial"] != before.Info.Serial || ev["not_after"] != float64(before.Info.NotAfter.Unix()) {
		t.Errorf("failed event serial, not_after = %v, %v; want the current %s, %d", ev["serial"], ev["not_after"], before.Info.Serial, before.Info.NotAfter.Unix())
	}
	if errTable, _ := ev["error"].(map[string]any); errTable["problem_type"] != "urn:ietf:params:acme:error:unauthorized" {
		t.Errorf("failed event error = %v, want the CA's unauthorized problem", ev["error"])
	}
}

// TestCallTimeout: a plugin call that hangs is cut at the plugin's
// call_timeout; the certificate fails naming the plugin, and cleanup
// still runs.
func TestCallTimeout(t *testing.T) {
	e := newEnv(t)
	hang := filepath.Join(e.work.Dir, "hang.sh")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\n[ \"$1\" = present ] && exec sleep 30\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := e.write(fmt.Sprintf(`
[[certificate]]
name = "slow"
domains = ["*.slow.example.com"]
solver = "hang"
scripts = ["events.lua"]

[plugins.hang]
path = %q
call_timeout = "2s" # also bounds the launch's Info call: not too short on a loaded machine
[plugins.hang.config]
program = %q
`, bins["dnsexec"], hang))
	start := time.Now()
	r := e.run(cfg, RunOptions{})["slow"]
	if r.Action != ActionFailed || !strings.Contains(r.Err.Error(), "presenting dns-01 for *.slow.example.com: plugin hang: present ") {
		t.Fatalf("run = %s %v, want failed presenting through plugin hang", r.Action, r.Err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("run took %s; the call was not cut at call_timeout", d)
	}
	e.event("slow.challenge-cleanup.*.slow.example.com")
}
