package engine

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// proxied is what env.write needs to put a fault proxy in front of the
// shared Pebble into [ca].
func proxied(p *pebbletest.FaultProxy) *pebbletest.Server {
	return &pebbletest.Server{DirectoryURL: p.DirectoryURL, CAFile: p.CAFile}
}

// rewrite makes p edit every answer to requests of kind.
func rewrite(p *pebbletest.FaultProxy, kind string, edit func(http.Header, []byte) []byte) {
	p.Add(pebbletest.Fault{Kind: kind, Rewrite: edit})
}

const verifiedCert = `
[[certificate]]
name = "checked"
domains = ["Checked.example.com"]
solver = "webroot"
scripts = ["events.lua"]
`

// TestVerifyBeforeStoring: a certificate whose leaf names another host is
// refused before it is stored, deployed or announced: the run fails with
// the reason, raises failed, and the current certificate stays; the stored
// names are the certificate's.
func TestVerifyBeforeStoring(t *testing.T) {
	p := pebbletest.NewFaultProxy(t, pebble)
	e := newEnv(t)
	e.srv = proxied(p)
	cfg := e.write(verifiedCert)
	r := e.run(cfg, RunOptions{})["checked"]
	if r.Err != nil {
		t.Fatalf("first run: %v", r.Err)
	}
	cur := e.current(cfg, "checked")
	if got := strings.Join(cur.Info.Names, " "); got != "checked.example.com" {
		t.Errorf("stored names %q, want the certificate's %q", got, "checked.example.com")
	}

	rewrite(p, "POST /certZ/", pebbletest.ForgeLeaf(t, func(c *x509.Certificate) {
		c.DNSNames = []string{"hostile-wrong.example.net"}
	}))
	r = e.run(cfg, RunOptions{Force: true})["checked"]
	if r.Action != ActionFailed || !errors.Is(r.Err, acme.CertificateWrongNames) {
		t.Fatalf("forged run = %s %v, want failed with %q", r.Action, r.Err, acme.CertificateWrongNames)
	}
	if msg := r.Err.Error(); !strings.HasPrefix(msg, "verifying certificate "+p.URL+"/certZ/") || !strings.Contains(msg, "hostile-wrong.example.net") {
		t.Errorf("error %q, want it to name the certificate URL and the leaf's names", msg)
	}
	if now := e.current(cfg, "checked"); now.ID != cur.ID || now.Info.Serial != cur.Info.Serial {
		t.Errorf("current became %s (serial %s), want %s (serial %s) kept", now.ID, now.Info.Serial, cur.ID, cur.Info.Serial)
	}
	if msg, _ := e.event("checked.failed")["error"].(map[string]any)["message"].(string); !strings.Contains(msg, string(acme.CertificateWrongNames)) {
		t.Errorf("failed event message %q, want the reason", msg)
	}
}

// TestTrustRoots: with trust_roots = Pebble's issuing root the chain is
// accepted; with another root it is refused as untrusted and nothing is
// stored.
func TestTrustRoots(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(good, pebble.RootPEM(t, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other-root.pem")
	otherPEM, err := os.ReadFile(pebble.CAFile) // the HTTPS root, not the issuing one
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, otherPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, roots string
		want        error
	}{
		{"issuing root", good, nil},
		{"other root", other, acme.CertificateUntrusted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.caExtra = "trust_roots = " + strconv.Quote(tt.roots)
			cfg := e.write(verifiedCert)
			r := e.run(cfg, RunOptions{})["checked"]
			if !errors.Is(r.Err, tt.want) || (tt.want == nil) != (r.Err == nil) {
				t.Fatalf("run = %s %v, want %v", r.Action, r.Err, tt.want)
			}
			if tt.want != nil {
				st, err := store.Open(cfg.Storage, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				if v, err := st.LoadCertificate(context.Background(), "checked"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a refused certificate was stored: %v, %v", v, err)
				}
			}
		})
	}
}

// TestOrderTimeout: ca.order_timeout bounds the order; when it passes the
// run fails with what was stuck and for how long, cleans up, raises
// failed and records the failure; a Retry-After past the deadline stops at
// once and becomes the earliest next attempt.
func TestOrderTimeout(t *testing.T) {
	for _, tt := range []struct {
		name   string
		faults func(p *pebbletest.FaultProxy)
		kind   string // of the PollError
		status string
		// retryAfter is the injected Retry-After; the next attempt must
		// not come before it (capped at renewal.MaxFailureRetryAfter).
		retryAfter time.Duration
	}{
		{"order stuck processing", func(p *pebbletest.FaultProxy) {
			rewrite(p, "POST /finalize-order/", pebbletest.SetStatus(acme.StatusProcessing))
			rewrite(p, "POST /my-order/", pebbletest.SetStatus(acme.StatusProcessing))
		}, "order", acme.StatusProcessing, 0},
		{"authorization stuck pending", func(p *pebbletest.FaultProxy) {
			rewrite(p, "POST /authZ/", func(h http.Header, b []byte) []byte {
				if p.Count("POST /chalZ/") == 0 {
					return b
				}
				return pebbletest.SetStatus(acme.StatusPending)(h, b)
			})
		}, "authorization", acme.StatusPending, 0},
		{"Retry-After past the deadline", func(p *pebbletest.FaultProxy) {
			rewrite(p, "POST /finalize-order/", func(h http.Header, b []byte) []byte {
				h.Set("Retry-After", "1000000000")
				return pebbletest.SetStatus(acme.StatusProcessing)(h, b)
			})
		}, "order", acme.StatusProcessing, renewal.MaxFailureRetryAfter},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := pebbletest.NewFaultProxy(t, pebble)
			tt.faults(p)
			e := newEnv(t)
			e.srv = proxied(p)
			e.caExtra = `order_timeout = "2s"`
			cfg := e.write(verifiedCert)
			start := time.Now()
			r := e.run(cfg, RunOptions{})["checked"]
			var pe *acme.PollError
			if r.Action != ActionFailed || !errors.As(r.Err, &pe) || !errors.Is(r.Err, context.DeadlineExceeded) {
				t.Fatalf("run = %s %v, want failed with a PollError at the deadline", r.Action, r.Err)
			}
			if pe.Kind != tt.kind || pe.Status != tt.status {
				t.Errorf("PollError %q %q, want %q %q: %v", pe.Kind, pe.Status, tt.kind, tt.status, r.Err)
			}
			if !strings.Contains(r.Err.Error(), "still "+tt.status+" after ") {
				t.Errorf("error %q does not say what was stuck and for how long", r.Err)
			}
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("run took %s with order_timeout 2s", took)
			}
			e.event("checked.challenge-cleanup.checked.example.com")
			if msg, _ := e.event("checked.failed")["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "still "+tt.status) {
				t.Errorf("failed event message %q, want the stuck state", msg)
			}
			m := e.meta(cfg, "checked")
			if m.Renewal.Failures != 1 {
				t.Errorf("failures = %d, want 1", m.Renewal.Failures)
			}
			if tt.retryAfter > 0 {
				if earliest := start.Add(tt.retryAfter - time.Minute); m.Renewal.RetryAt.Before(earliest) {
					t.Errorf("next attempt at %s, want the CA's time (not before %s)", m.Renewal.RetryAt, earliest)
				}
				if pe.RetryAfter == 0 || pe.Polls != 0 {
					t.Errorf("PollError = %+v, want it stopped at once on the Retry-After", pe)
				}
			}
		})
	}
}

// TestRefusedRollover: a key rollover the CA refuses, or cannot do (no
// keyChange in its directory), keeps the account key, leaves no pending or
// .old key (the new key was never registered) and says "changing account
// key" once.
func TestRefusedRollover(t *testing.T) {
	for _, tt := range []struct {
		name   string
		faults func(p *pebbletest.FaultProxy)
		want   string // the error's end
	}{
		{"refused", func(p *pebbletest.FaultProxy) {
			p.Add(pebbletest.Fault{Kind: "POST /rollover-account-key", Status: http.StatusForbidden, Detail: "keyChange not implemented"})
		},
			"unauthorized (403): keyChange not implemented"},
		{"no keyChange", func(p *pebbletest.FaultProxy) {
			rewrite(p, "GET /dir", pebbletest.EditJSON(func(m map[string]any) { delete(m, "keyChange") }))
		}, "no keyChange"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := pebbletest.NewFaultProxy(t, pebble)
			e := newEnv(t)
			e.srv = proxied(p)
			cfg := e.write("")
			var before []byte
			e.withEngine(cfg, Options{}, func(eng *Engine, st *store.Store) {
				ctx := context.Background()
				tt.faults(p) // before the client reads the directory
				if _, err := eng.Account(ctx); err != nil {
					t.Fatal(err)
				}
				a, err := st.LoadAccount(ctx, cfg.CA.Directory)
				if err != nil {
					t.Fatal(err)
				}
				before = a.KeyPEM
				_, err = eng.RolloverAccount(ctx)
				if err == nil || !strings.HasSuffix(err.Error(), tt.want) {
					t.Fatalf("RolloverAccount = %v, want an error ending %q", err, tt.want)
				}
				if n := strings.Count(err.Error(), "changing account key"); n != 1 {
					t.Errorf("error %q says \"changing account key\" %d times, want once", err, n)
				}
				a, err = st.LoadAccount(ctx, cfg.CA.Directory)
				if err != nil || !bytes.Equal(a.KeyPEM, before) || a.PendingKeyPEM != nil {
					t.Errorf("account after the refusal = %+v, %v; want the old key, nothing pending", a, err)
				}
			})
			left, _ := filepath.Glob(filepath.Join(cfg.Storage, "accounts", store.AccountDirName(cfg.CA.Directory), "*"))
			for _, f := range left {
				if strings.HasSuffix(f, ".old") || strings.Contains(filepath.Base(f), "next") {
					t.Errorf("%s left after a refused rollover", f)
				}
			}
		})
	}
}
