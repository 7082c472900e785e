package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// startDaemon runs Daemon over cfg in the background with o (Config,
// Store and Logger filled in) and returns its ctx's cancel and the channel
// that receives its result.
func (e *env) startDaemon(ctx context.Context, cfg *config.Config, o DaemonOptions) <-chan error {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	o.Config, o.Store = cfg, st
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(e.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	done := make(chan error, 1)
	go func() {
		err := Daemon(ctx, o)
		st.Close()
		done <- err
	}()
	return done
}

// stopped waits for the daemon's result; it must be nil.
func stopped(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Daemon = %v, want nil after the stop", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop")
	}
}

// TestDaemonStopDuringChallenge: SIGTERM (the daemon's ctx cancelled)
// while a challenge is presented and about to be answered abandons the
// order safely: the challenge is not answered, the solver's files are
// cleaned up and challenge-cleanup reaches the script, nothing is stored,
// failed is not raised, and no backoff is earned (the next run orders at
// once).
func TestDaemonStopDuringChallenge(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"stop\"\ndomains = [\"stop.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var token string
	hook := func(hctx context.Context, _ *config.Certificate, _ *Plugin, ch sdk.Challenge) error {
		token = ch.Token
		if _, err := os.Stat(filepath.Join(webRoot, ".well-known", "acme-challenge", ch.Token)); err != nil {
			t.Errorf("challenge not presented when the stop came: %v", err)
		}
		cancel() // SIGTERM
		<-hctx.Done()
		return hctx.Err()
	}
	pebble.Counter().Reset()
	stopped(t, e.startDaemon(ctx, cfg, DaemonOptions{Options: Options{beforeAccept: hook}}))

	if counts, _ := pebble.Counter().Snapshot(); counts["POST /chalZ/"] != 0 || counts["POST /order-plz"] != 1 {
		t.Errorf("Pebble requests %v, want one order and no challenge answered", counts)
	}
	if token == "" {
		t.Fatal("the daemon never reached the challenge")
	}
	if _, err := os.Stat(filepath.Join(webRoot, ".well-known", "acme-challenge", token)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("challenge file left after the stop (stat: %v)", err)
	}
	e.event("stop.challenge-cleanup.stop.example.com")
	if _, err := os.Stat(filepath.Join(e.work.Events, "stop.failed.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed raised for a stop (stat: %v), want nothing: the order was abandoned, not failed", err)
	}
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, lerr := st.LoadCertificate(context.Background(), "stop")
	m, merr := readMeta(context.Background(), st, "stop", nil)
	st.Close()
	if !errors.Is(lerr, store.ErrNotFound) {
		t.Errorf("LoadCertificate after the stop = %v, want ErrNotFound", lerr)
	}
	if merr != nil {
		t.Fatal(merr)
	}
	if r := m.Renewal; r.Failures != 0 || !r.RetryAt.IsZero() {
		t.Errorf("renewal state after the stop = %+v, want no failure and no backoff", r)
	}
	if r := e.run(cfg, RunOptions{})["stop"]; r.Action != ActionIssued || r.Err != nil {
		t.Errorf("run after the stop = %s %q %v, want issued at once", r.Action, r.Reason, r.Err)
	}
}

// cancelAfter cancels when a response for a path starting with prefix has
// been received: a SIGTERM that arrives at that point.
type cancelAfter struct {
	rt     http.RoundTripper
	prefix string
	cancel context.CancelFunc
}

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil && strings.HasPrefix(r.URL.Path, c.prefix) {
		c.cancel()
	}
	return resp, err
}

// TestDaemonStopAfterDownload: a stop that comes once the certificate has
// been downloaded keeps it (stored, chaining to Pebble's root) with its
// deploy pending and no backoff; the next run deploys it without a new
// order.
func TestDaemonStopAfterDownload(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"late\"\ndomains = [\"late.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := &http.Client{Transport: cancelAfter{rt: pebble.HTTPClient().Transport, prefix: "/certZ/", cancel: cancel}}
	stopped(t, e.startDaemon(ctx, cfg, DaemonOptions{Options: Options{HTTPClient: hc}}))

	v := e.current(cfg, "late")
	verifyChain(t, v, []string{"late.example.com"})
	m := e.meta(cfg, "late")
	if !m.PendingDeploy || m.Renewal.Failures != 0 || !m.Renewal.RetryAt.IsZero() {
		t.Errorf("metadata after the stop: pending deploy %t, renewal %+v; want pending and no backoff", m.PendingDeploy, m.Renewal)
	}
	if _, err := os.Stat(filepath.Join(e.work.Events, "late.issued.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("issued raised during the stop (stat: %v), want it left for the next run", err)
	}
	pebble.Counter().Reset()
	if r := e.run(cfg, RunOptions{})["late"]; r.Action != ActionDeployed || r.Err != nil || r.Version != v.ID {
		t.Errorf("run after the stop = %s %s %v, want %s deployed", r.Action, r.Version, r.Err, v.ID)
	}
	if n := newOrders(); n != 0 {
		t.Errorf("newOrder requests after the stop = %d, want 0", n)
	}
	if ev := e.event("late.issued"); ev["serial"] != v.Info.Serial {
		t.Errorf("issued event serial = %v, want %s", ev["serial"], v.Info.Serial)
	}
}

// outage fails every request while down is set, as an unreachable CA, and
// counts them.
type outage struct {
	rt       http.RoundTripper
	down     atomic.Bool
	mu       sync.Mutex
	failures int
}

func (o *outage) RoundTrip(r *http.Request) (*http.Response, error) {
	if o.down.Load() {
		o.mu.Lock()
		o.failures++
		o.mu.Unlock()
		return nil, errors.New("connect: connection refused")
	}
	return o.rt.RoundTrip(r)
}

func (o *outage) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := o.failures
	o.failures = 0
	return n
}

// TestDaemonCAOutage: with the CA unreachable the daemon keeps running and
// backs off, each wait about twice the last (5 minutes ±20%, then 10, then
// 20), with a few requests per attempt; once the CA is back, the next
// check issues the certificate.
func TestDaemonCAOutage(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"outage\"\ndomains = [\"outage.example.com\"]\nsolver = \"webroot\"\n")
	tr := &outage{rt: pebble.HTTPClient().Transport}
	tr.down.Store(true)
	clock := newFakeClock(time.Now())
	runs := make(chan *RunResult, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.startDaemon(ctx, cfg, DaemonOptions{
		Options:  Options{HTTPClient: &http.Client{Transport: tr}},
		Clock:    clock,
		MaxSleep: 30 * 24 * time.Hour,
		afterRun: func(r *RunResult) { runs <- r },
	})
	result := func() Result {
		t.Helper()
		select {
		case res := <-runs:
			return res.Results[0]
		case <-time.After(20 * time.Second):
			t.Fatal("no run")
		}
		return Result{}
	}
	base := renewal.BackoffBase
	for i := range 3 {
		r := result()
		if r.Action != ActionFailed || !strings.Contains(r.Err.Error(), "connection refused") {
			t.Fatalf("run %d during the outage = %s %v, want failed", i, r.Action, r.Err)
		}
		if n := tr.count(); n == 0 || n > 5 {
			t.Errorf("run %d: %d requests to the unreachable CA, want 1 to 5", i, n)
		}
		w := clock.next(t)
		lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
		if w.d < lo || w.d > hi {
			t.Errorf("wait after failure %d = %s, want %s to %s", i+1, w.d, lo, hi)
		}
		base *= 2
		if i == 2 {
			tr.down.Store(false)
		}
		clock.elapse(w)
	}
	if r := result(); r.Action != ActionIssued || r.Err != nil {
		t.Errorf("run after the outage = %s %v, want issued", r.Action, r.Err)
	}
	clock.next(t)
	cancel()
	stopped(t, done)
	if m := e.meta(cfg, "outage"); m.Renewal.Failures != 0 || m.Renewal.LastSuccess.IsZero() {
		t.Errorf("renewal state after recovery = %+v, want the failures cleared", m.Renewal)
	}
}

// TestDaemonStopDuringDeploy: a stop while the deploy script runs keeps the
// certificate, leaves the deploy pending for the next start and records
// the interrupted deploy in the metadata (saved although the run's context
// is done).
func TestDaemonStopDuringDeploy(t *testing.T) {
	e := newEnv(t)
	started := filepath.Join(e.work.Dir, "deploy-started")
	script := fmt.Sprintf(`local acmehook = require("acmehook")
acmehook.on("issued", function(ev)
  assert(acmehook.files.write(%q, ev.serial))
  local ok, err = acmehook.sleep(30) -- a slow reload, cut short by the stop
  if not ok then error(err) end
end)
`, started)
	if err := os.WriteFile(filepath.Join(e.work.Dir, "slow.lua"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e.write("[[certificate]]\nname = \"slow\"\ndomains = [\"slow-deploy.example.com\"]\nsolver = \"webroot\"\nscripts = [\"slow.lua\"]\nscript_timeout = \"1m\"\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.startDaemon(ctx, cfg, DaemonOptions{})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("the deploy script never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	stopped(t, done)

	v := e.current(cfg, "slow")
	verifyChain(t, v, []string{"slow-deploy.example.com"})
	m := e.meta(cfg, "slow")
	if !m.PendingDeploy {
		t.Errorf("pending deploy after a stop during the script = false, want true")
	}
	if n := len(m.Events); n == 0 || m.Events[n-1].Name != "issued" || m.Events[n-1].Result != "error" || m.Events[n-1].Version != v.ID {
		t.Errorf("last recorded event = %+v, want the interrupted issued deploy of %s", m.Events, v.ID)
	}
}
