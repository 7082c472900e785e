package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/store"
)

// TestGuardHoldsOnlyACertificateInService: the reissue guard protects a
// certificate in service. With none (a first issuance whose earlier
// attempts crashed, a revoked certificate) a full guard does not hold the
// order; the failure backoff still does; and `issue NAME` overrides the
// guard even when the CA refuses replaces and the order is placed again.
func TestGuardHoldsOnlyACertificateInService(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"g\"\ndomains = [\"g.guard.example.com\"]\nsolver = \"webroot\"\nmax_orders = 1\nmax_orders_window = \"24h\"\n")
	start := time.Now()
	e.now = func() time.Time { return start }
	e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
		m := &Meta{}
		m.Renewal.RecordOrder(start.Add(-time.Hour)) // a first attempt that crashed
		if err := eng.saveMeta(context.Background(), "g", m); err != nil {
			t.Fatal(err)
		}
	})
	if r := e.run(cfg, RunOptions{})["g"]; r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first issuance with a full guard = %s %q %v, want issued", r.Action, r.Reason, r.Err)
	}

	t.Run("backoff still holds", func(t *testing.T) {
		cfg := e.write("[[certificate]]\nname = \"b\"\ndomains = [\"b.guard.example.com\"]\nsolver = \"webroot\"\nmax_orders = 1\n")
		e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
			m := &Meta{}
			m.Renewal.RecordOrder(start.Add(-time.Hour))
			eng.recordFailure(m, &acme.Problem{Type: acme.ProblemRateLimited, RetryAfter: time.Hour})
			if err := eng.saveMeta(context.Background(), "b", m); err != nil {
				t.Fatal(err)
			}
		})
		if r := e.run(cfg, RunOptions{})["b"]; r.Action != ActionHeld || !strings.Contains(r.Reason, "rate limited") {
			t.Errorf("run in the backoff = %s %q, want held by the backoff", r.Action, r.Reason)
		}
	})

	t.Run("revoked is replaced with a full guard", func(t *testing.T) {
		old := e.current(cfg, "g")
		e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
			if _, err := eng.Revoke(context.Background(), "g", RevokeOptions{Reason: acme.ReasonSuperseded}); err != nil {
				t.Fatal(err)
			}
		})
		pebble.Counter().Reset()
		r := e.run(cfg, RunOptions{})["g"]
		if r.Action != ActionRenewed || r.Err != nil || r.Serial == old.Info.Serial {
			t.Fatalf("run after revoke with a full guard = %s %q %v, want renewed", r.Action, r.Reason, r.Err)
		}
		if n := newOrders(); n != 1 {
			t.Errorf("newOrder requests = %d, want 1", n)
		}
		if got := len(e.meta(cfg, "g").Renewal.Orders); got != 3 {
			t.Errorf("orders counted by the guard = %d, want 3 (the guard still counts the replacement)", got)
		}
	})

	t.Run("issue overrides the guard after alreadyReplaced", func(t *testing.T) {
		backup := filepath.Join(e.work.Dir, "backup-g")
		copyDir(t, cfg.Storage, backup)
		if r := e.run(cfg, RunOptions{Force: true})["g"]; r.Action != ActionRenewed || r.Err != nil {
			t.Fatalf("forced renewal = %s %v", r.Action, r.Err)
		}
		restored := *cfg
		restored.Storage = backup // its current certificate was replaced already
		pebble.Counter().Reset()
		r := e.run(&restored, RunOptions{Force: true})["g"]
		if r.Action != ActionRenewed || r.Err != nil {
			t.Fatalf("forced renewal of a replaced certificate with a full guard = %s %v, want renewed", r.Action, r.Err)
		}
		if n := newOrders(); n != 2 {
			t.Errorf("newOrder requests = %d, want 2 (alreadyReplaced, then without replaces)", n)
		}
	})
}

// TestLocalFailureNoBackoff: a plugin that cannot start fails the
// certificate before any request to the CA: failed is recorded, but no
// backoff, so the run after the fix orders at once.
func TestLocalFailureNoBackoff(t *testing.T) {
	e := newEnv(t)
	broken := filepath.Join(e.work.Dir, "broken-plugin")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil { // exits before the handshake
		t.Fatal(err)
	}
	certs := "[[certificate]]\nname = \"l\"\ndomains = [\"l.local.example.com\"]\nsolver = \"broken\"\n\n[plugins.broken]\npath = %q\n"
	cfg := e.write(strings.Replace(certs, "%q", `"`+broken+`"`, 1))
	pebble.Counter().Reset()
	if r := e.run(cfg, RunOptions{})["l"]; r.Action != ActionFailed || r.Err == nil {
		t.Fatalf("run with a plugin that cannot start = %s %v, want failed", r.Action, r.Err)
	}
	if _, total := pebble.Counter().Snapshot(); total != 0 {
		t.Errorf("%d requests to the CA, want none", total)
	}
	m := e.meta(cfg, "l")
	if st := m.Renewal; st.Failures != 0 || !st.RetryAt.IsZero() {
		t.Errorf("renewal state = %+v, want no backoff for a local failure", st)
	}
	if n := len(m.Events); n == 0 || m.Events[n-1].Name != "failed" {
		t.Errorf("events = %+v, want the failure recorded", m.Events)
	}
	if err := os.Chmod(broken, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(broken)
	cfg = e.write("[[certificate]]\nname = \"l\"\ndomains = [\"l.local.example.com\"]\nsolver = \"webroot\"\n")
	if r := e.run(cfg, RunOptions{})["l"]; r.Action != ActionIssued || r.Err != nil {
		t.Errorf("run after the fix = %s %q %v, want issued at once", r.Action, r.Reason, r.Err)
	}
}

// TestHeldCadence: the daemon looks at a held certificate at least every
// HeldRecheck, and a run says at ERROR when the certificate in service
// expires before the hold ends.
func TestHeldCadence(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"h\"\ndomains = [\"h.held.example.com\"]\nsolver = \"webroot\"\nmax_orders = 1\nmax_orders_window = \"168h\"\nkey_type = \"ec256\"\n")
	start := time.Now()
	e.now = func() time.Time { return start }
	if r := e.run(cfg, RunOptions{})["h"]; r.Action != ActionIssued {
		t.Fatalf("first run = %s %v", r.Action, r.Err)
	}
	v := e.current(cfg, "h")
	cfg = e.write("[[certificate]]\nname = \"h\"\ndomains = [\"h.held.example.com\"]\nsolver = \"webroot\"\nmax_orders = 1\nmax_orders_window = \"168h\"\nkey_type = \"rsa2048\"\n")
	later := start.Add(time.Hour)
	if end := start.Add(168 * time.Hour); !v.Info.NotAfter.Before(end) {
		t.Skipf("the CA's certificate (not after %s) outlives the hold (until %s)", v.Info.NotAfter, end)
	}
	e.now = func() time.Time { return later }
	e.logs = &bytes.Buffer{}
	if r := e.run(cfg, RunOptions{})["h"]; r.Action != ActionHeld {
		t.Fatalf("run after the key type change = %s %q, want held", r.Action, r.Reason)
	}
	if !strings.Contains(e.logs.String(), "level=ERROR msg=\"not ordering now, and the certificate in service expires before the hold ends\"") {
		t.Errorf("no ERROR for a certificate expiring before the hold ends:\n%s", e.logs)
	}
	e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
		st, err := eng.Status(context.Background(), "h")
		if err != nil {
			t.Fatal(err)
		}
		if st.Next != NextHold || st.NextCheck.After(later.Add(HeldRecheck)) {
			t.Errorf("status = %s, next check %s; want held and a check within %s", st.Next, st.NextCheck, HeldRecheck)
		}
		if got := eng.nextCheck(context.Background(), eng.cfg.Certificate("h"), time.Time{}); got.After(later.Add(HeldRecheck)) {
			t.Errorf("daemon's next check = %s, want within %s of %s", got, HeldRecheck, later)
		}
	})
}
