package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// withEngine opens cfg's storage and an engine with o (Config, Store and,
// unless set, Logger and Now filled in) for f.
func (e *env) withEngine(cfg *config.Config, o Options, f func(eng *Engine, st *store.Store)) {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	o.Config, o.Store = cfg, st
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if o.Now == nil {
		o.Now = e.now
	}
	eng, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	defer eng.Close()
	f(eng, st)
}

// runWith is env.run with engine options (another CA's HTTP client).
func (e *env) runWith(cfg *config.Config, o Options, ro RunOptions) map[string]Result {
	e.t.Helper()
	out := map[string]Result{}
	e.withEngine(cfg, o, func(eng *Engine, _ *store.Store) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := eng.Run(ctx, ro)
		if err != nil {
			e.t.Fatalf("Run: %v", err)
		}
		for _, r := range res.Results {
			out[r.Name] = r
		}
	})
	return out
}

// order fetches the order that produced version v from the CA.
func (e *env) order(cfg *config.Config, v *store.Version) acme.Order {
	e.t.Helper()
	var o acme.Order
	e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
		ctx := context.Background()
		acct, err := eng.Account(ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if o, err = eng.client.GetOrder(ctx, acct, v.Info.OrderURL); err != nil {
			e.t.Fatalf("GetOrder(%s): %v", v.Info.OrderURL, err)
		}
	})
	return o
}

func ariCertID(t *testing.T, v *store.Version) string {
	t.Helper()
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := acme.ARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// copyDir copies the storage directory src to dst (a backup restored
// later), keeping modes and the current symlinks.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ariFetches counts the renewalInfo requests Pebble served since the last
// Reset.
func ariFetches(srv *pebbletest.Server) int {
	counts, _ := srv.Counter().Snapshot()
	return counts["GET /draft-ietf-acme-ari-03/"]
}

// TestRenewARI: the run that issues a certificate asks nothing about its
// renewal (no renewalInfo request), and schedules the first fetch at
// renewal.FirstARIFetch; a run before that asks nothing either. A window
// moved into the past (management API) is learnt by the first run after
// that time, which renews with replaces naming the old certificate, and
// Pebble accepts it. Restoring a backup of the storage and renewing the
// same certificate again gets alreadyReplaced, and the order is placed
// again without replaces.
func TestRenewARI(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"ari\"\ndomains = [\"ari.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	start := time.Now()
	pebble.Counter().Reset()
	if r := e.run(cfg, RunOptions{})["ari"]; r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	if n := ariFetches(pebble); n != 0 {
		t.Errorf("renewalInfo requests in the issuing run = %d, want 0", n)
	}
	old := e.current(cfg, "ari")
	first := renewal.FirstARIFetch(old.Info.NotBefore, old.Info.NotAfter)
	st := e.meta(cfg, "ari").Renewal
	if !st.ARIWindow.IsZero() || !st.ARINextFetch.Equal(first) || !first.After(start.Add(time.Hour)) {
		t.Fatalf("renewal state after issuance = %+v, want no window and the first fetch at %s", st, first)
	}
	if got := e.order(cfg, old).Replaces; got != "" {
		t.Errorf("first order replaces %q, want nothing", got)
	}
	before := first.Add(-time.Minute)
	e.now = func() time.Time { return before }
	pebble.Counter().Reset()
	if r := e.run(cfg, RunOptions{})["ari"]; r.Action != ActionNone || r.Err != nil {
		t.Fatalf("run before the first fetch = %s %v, want nothing to do", r.Action, r.Err)
	}
	// The clock moved more than a day: the directory is looked at once
	// for changed terms of service (checkTerms), nothing else.
	if counts, total := pebble.Counter().Snapshot(); total != counts["GET /dir"] || counts["GET /dir"] > 1 {
		t.Errorf("requests before the first fetch = %v, want none but one look at the directory's terms", counts)
	}
	backup := filepath.Join(e.work.Dir, "backup")
	copyDir(t, cfg.Storage, backup)

	pebble.SetRenewalInfo(t, old.CertPEM, start.Add(-48*time.Hour), start.Add(-24*time.Hour))
	later := first.Add(time.Minute)
	e.now = func() time.Time { return later }
	pebble.Counter().Reset()
	r := e.run(cfg, RunOptions{})["ari"]
	if r.Action != ActionRenewed || r.Err != nil || !strings.Contains(r.Reason, "ARI window") {
		t.Fatalf("run after the first fetch time = %s %q %v, want renewed by the ARI window", r.Action, r.Reason, r.Err)
	}
	if n := newOrders(); n != 1 {
		t.Errorf("newOrder requests = %d, want 1", n)
	}
	if n := ariFetches(pebble); n != 1 {
		t.Errorf("renewalInfo requests = %d, want 1 (the old certificate's, none for the new one)", n)
	}
	v := e.current(cfg, "ari")
	verifyChain(t, v, cfg.Certificates[0].Domains)
	if got, want := e.order(cfg, v).Replaces, ariCertID(t, old); got != want {
		t.Errorf("renewal order replaces %q, want %q (the old certificate's ARI CertID)", got, want)
	}
	if ev := e.event("ari.renew"); ev["previous_serial"] != old.Info.Serial {
		t.Errorf("renew event previous_serial = %v, want %s", ev["previous_serial"], old.Info.Serial)
	}

	t.Run("alreadyReplaced", func(t *testing.T) {
		restored := *cfg
		restored.Storage = backup
		pebble.Counter().Reset()
		r := e.run(&restored, RunOptions{})["ari"]
		if r.Action != ActionRenewed || r.Err != nil {
			t.Fatalf("renewal from the backup = %s %v, want renewed after retrying without replaces", r.Action, r.Err)
		}
		if n := newOrders(); n != 2 {
			t.Errorf("newOrder requests = %d, want 2 (alreadyReplaced, then without replaces)", n)
		}
		v := e.current(&restored, "ari")
		if got := e.order(&restored, v).Replaces; got != "" {
			t.Errorf("retried order replaces %q, want nothing", got)
		}
		if got := len(e.meta(&restored, "ari").Renewal.Orders); got != 3 {
			t.Errorf("orders counted by the guard = %d, want 3 (the first issuance and both attempts)", got)
		}
	})
}

// noARI hides renewalInfo in the CA's directory, as a CA without ARI.
type noARI struct{ rt http.RoundTripper }

func (n noARI) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := n.rt.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/dir") {
		return resp, err
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return nil, err
	}
	delete(dir, "renewalInfo")
	b, _ := json.Marshal(dir)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// TestRenewLifetimeWithoutARI: from a CA without ARI, a 2-day certificate
// is renewed at half its lifetime, to the minute, with the injected clock.
func TestRenewLifetimeWithoutARI(t *testing.T) {
	srv := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, Profiles: map[string]pebbletest.Profile{
		"twoday": {Description: "two days", Validity: 48 * time.Hour},
	}})
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"life\"\ndomains = [\"life.example.com\"]\nsolver = \"webroot\"\nprofile = \"twoday\"\n")
	cfg.CA.Directory, cfg.CA.CABundle = srv.DirectoryURL, srv.CAFile
	o := Options{HTTPClient: &http.Client{Transport: noARI{srv.HTTPClient().Transport}}}
	if r := e.runWith(cfg, o, RunOptions{})["life"]; r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	v := e.current(cfg, "life")
	if life := v.Info.NotAfter.Sub(v.Info.NotBefore) + time.Second; life != 48*time.Hour {
		t.Fatalf("lifetime = %s, want 48h", life)
	}
	half := v.Info.NotBefore.Add(24 * time.Hour)
	steps := []struct {
		at   time.Time
		want Action
	}{
		{half.Add(-time.Minute), ActionNone},
		{half.Add(time.Minute), ActionRenewed},
	}
	for _, s := range steps {
		e.now = func() time.Time { return s.at }
		srv.Counter().Reset()
		r := e.runWith(cfg, o, RunOptions{})["life"]
		if r.Action != s.want || r.Err != nil || !strings.Contains(r.Reason, "1/2 of 2-day lifetime") {
			t.Errorf("run at %s = %s %q %v, want %s by the 1/2 lifetime rule", s.at, r.Action, r.Reason, r.Err, s.want)
		}
		if n := ariFetches(srv); n != 0 {
			t.Errorf("renewalInfo requests = %d, want 0 from a CA without ARI", n)
		}
		// The run before the renewal looked for renewal information (the
		// first fetch is at a third of the lifetime).
		if ari := e.meta(cfg, "life").Renewal.ARIError; s.want == ActionNone && !strings.Contains(ari, "not supported") {
			t.Errorf("ARI error recorded = %q, want it to say the CA does not offer it", ari)
		}
	}
}

// TestRevoke revokes by the account key and by the certificate's key;
// Pebble reports the certificate revoked with the reason, revoke reaches
// the script with the reason, and the next run replaces the certificate:
// with the same key for superseded (reuse_key), with a fresh one for
// keyCompromise, whose old key is moved aside.
func TestRevoke(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name    string
		reason  int
		withKey bool
		keptKey bool
	}{
		{"rv-account", acme.ReasonSuperseded, false, true},
		{"rv-certkey", acme.ReasonKeyCompromise, true, false},
	}
	var certs string
	for _, tt := range tests {
		certs += "[[certificate]]\nname = \"" + tt.name + "\"\ndomains = [\"" + tt.name + ".example.com\"]\nsolver = \"webroot\"\nreuse_key = true\nscripts = [\"events.lua\"]\n"
	}
	cfg := e.write(certs)
	for n, r := range e.run(cfg, RunOptions{}) {
		if r.Action != ActionIssued || r.Err != nil {
			t.Fatalf("%s: first run = %s %v, want issued", n, r.Action, r.Err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := e.current(cfg, tt.name)
			var res RevokeResult
			e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
				var err error
				if res, err = eng.Revoke(context.Background(), tt.name, RevokeOptions{Reason: tt.reason, WithCertKey: tt.withKey}); err != nil {
					t.Fatalf("Revoke: %v", err)
				}
			})
			st := pebble.CertStatus(t, old.Info.Serial)
			if st["Status"] != "Revoked" || st["Reason"] != float64(tt.reason) {
				t.Errorf("Pebble's status = %v, want Revoked with reason %d", st, tt.reason)
			}
			if ev := e.event(tt.name + ".revoke"); ev["revocation_reason"] != float64(tt.reason) || ev["serial"] != old.Info.Serial {
				t.Errorf("revoke event = reason %v serial %v, want %d %s", ev["revocation_reason"], ev["serial"], tt.reason, old.Info.Serial)
			}
			m := e.meta(cfg, tt.name)
			if !m.Renewal.Revoked {
				t.Errorf("metadata does not record the revocation: %+v", m.Renewal)
			}
			if !tt.keptKey {
				if fileMode(t, res.KeyMovedTo) != 0o600 {
					t.Errorf("key moved aside with mode %v, want 0600", fileMode(t, res.KeyMovedTo))
				}
				if b, _ := os.ReadFile(res.KeyMovedTo); !bytes.Equal(b, old.KeyPEM) {
					t.Errorf("%s does not hold the old key", res.KeyMovedTo)
				}
			}

			r := e.run(cfg, RunOptions{Names: []string{tt.name}})[tt.name]
			if r.Action != ActionRenewed || r.Err != nil {
				t.Fatalf("run after revoking = %s %v, want renewed", r.Action, r.Err)
			}
			want := "revoked"
			if !tt.keptKey {
				want = "key was moved aside"
			}
			if !strings.Contains(r.Reason, want) {
				t.Errorf("reason = %q, want it to mention %q", r.Reason, want)
			}
			v := e.current(cfg, tt.name)
			if same := bytes.Equal(v.KeyPEM, old.KeyPEM); same != tt.keptKey {
				t.Errorf("new certificate reuses the old key: %t, want %t", same, tt.keptKey)
			}
			if e.meta(cfg, tt.name).Renewal.Revoked {
				t.Errorf("the replacement is still marked revoked")
			}
		})
	}
}

// TestReissueGuard: a CA whose renewal window is always in the past would
// have every run renew; max_orders = 2 per 24h holds the third order back,
// saying so, until the first order leaves the window.
func TestReissueGuard(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"guard\"\ndomains = [\"guard.example.com\"]\nsolver = \"webroot\"\nmax_orders = 2\nmax_orders_window = \"24h\"\n")
	// Each certificate's renewal information is first fetched
	// renewal.MaxFirstARIDelay after its issuance (90-day certificates);
	// the runs start there.
	start := time.Now().Add(renewal.MaxFirstARIDelay)
	steps := []struct {
		after time.Duration
		want  Action
	}{
		{0, ActionIssued},
		{7 * time.Hour, ActionRenewed},
		{14 * time.Hour, ActionHeld},
		{21 * time.Hour, ActionHeld},
		{24*time.Hour + time.Minute, ActionRenewed},
	}
	for _, s := range steps {
		at := start.Add(s.after)
		e.now = func() time.Time { return at }
		pebble.Counter().Reset()
		r := e.run(cfg, RunOptions{})["guard"]
		if r.Action != s.want || r.Err != nil {
			t.Fatalf("run at +%s = %s %q %v, want %s", s.after, r.Action, r.Reason, r.Err, s.want)
		}
		wantOrders := 1
		if s.want == ActionHeld {
			wantOrders = 0
			if !strings.Contains(r.Reason, "reissue guard: 2 orders in the last 24h (limit 2)") {
				t.Errorf("run at +%s: reason %q does not report the guard", s.after, r.Reason)
			}
		}
		if n := newOrders(); n != wantOrders {
			t.Errorf("run at +%s: newOrder requests = %d, want %d", s.after, n, wantOrders)
		}
		if s.want == ActionHeld {
			e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
				d, err := eng.Explain(context.Background(), "guard")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(d.Explain(), "reissue guard:") || !strings.Contains(d.Explain(), "ARI window:") {
					t.Errorf("run at +%s: Explain lacks the guard or the ARI window:\n%s", s.after, d.Explain())
				}
			})
		}
		// The CA misbehaves: every certificate is due at once.
		v := e.current(cfg, "guard")
		pebble.SetRenewalInfo(t, v.CertPEM, start.Add(-48*time.Hour), start.Add(-24*time.Hour))
	}
}

// TestBackoff: after a rateLimited failure with a Retry-After, run holds
// the certificate back (saying until when) without contacting the CA,
// until the Retry-After has passed or the order is forced.
func TestBackoff(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"backoff\"\ndomains = [\"backoff.example.com\"]\nsolver = \"webroot\"\n")
	start := time.Now()
	e.now = func() time.Time { return start }
	e.withEngine(cfg, Options{}, func(eng *Engine, st *store.Store) {
		m := &Meta{}
		eng.recordFailure(m, fmt.Errorf("creating order: %w", &acme.Problem{Type: acme.ProblemRateLimited, Detail: "too many certificates", RetryAfter: 3 * time.Hour}))
		if err := eng.saveMeta(context.Background(), "backoff", m); err != nil {
			t.Fatal(err)
		}
	})
	steps := []struct {
		name  string
		after time.Duration
		force bool
		want  Action
	}{
		{"within the Retry-After", 2 * time.Hour, false, ActionHeld},
		{"forced", 2 * time.Hour, true, ActionIssued},
	}
	for _, s := range steps {
		at := start.Add(s.after)
		e.now = func() time.Time { return at }
		pebble.Counter().Reset()
		r := e.run(cfg, RunOptions{Force: s.force})["backoff"]
		if r.Action != s.want || r.Err != nil {
			t.Fatalf("%s: run = %s %q %v, want %s", s.name, r.Action, r.Reason, r.Err, s.want)
		}
		if s.want == ActionHeld {
			if want := "rate limited by the CA, waiting after 1 consecutive failure until " + start.Add(3*time.Hour).UTC().Format("2006-01-02 15:04"); !strings.Contains(r.Reason, want) {
				t.Errorf("%s: reason %q, want it to contain %q", s.name, r.Reason, want)
			}
			if _, total := pebble.Counter().Snapshot(); total != 0 {
				t.Errorf("%s: %d requests to the CA, want 0", s.name, total)
			}
		}
	}
	if st := e.meta(cfg, "backoff").Renewal; st.Failures != 0 || !st.RetryAt.IsZero() {
		t.Errorf("renewal state after success = %+v, want the backoff cleared", st)
	}
}
