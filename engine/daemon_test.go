package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
)

// fakeClock is a Clock whose time moves only when the test says: each
// wait of the daemon is handed to the test, which advances the clock and
// fires it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan fakeWait, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.waits <- fakeWait{d, ch}
	return ch
}

// next returns the daemon's next wait.
func (c *fakeClock) next(t *testing.T) fakeWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not go to sleep")
		return fakeWait{}
	}
}

// elapse moves the clock by w's duration and wakes the daemon.
func (c *fakeClock) elapse(w fakeWait) {
	c.mu.Lock()
	c.now = c.now.Add(w.d)
	now := c.now
	c.mu.Unlock()
	w.fire <- now
}

// TestDaemon runs the daemon with an injected clock on a 6-day
// certificate: it issues it without asking for renewal information, and
// sleeps exactly until the first fetch (renewal.FirstARIFetch); Pebble's
// window, moved into the past meanwhile, then has it renew with replaces
// naming the first certificate. For the second certificate it sleeps each
// time until the next check (the first fetch, refetches after the CA's
// Retry-After, then the time chosen in the ARI window) and renews it by
// itself; it keeps its configuration when a reload brings an invalid one,
// takes a valid reload (a new certificate is issued at once), and stops
// cleanly when its context is cancelled.
func TestDaemon(t *testing.T) {
	e := newEnv(t)
	one := "[[certificate]]\nname = \"dm\"\ndomains = [\"dm.example.com\"]\nsolver = \"webroot\"\nprofile = \"shortlived\"\nscripts = [\"events.lua\"]\n"
	cfg := e.write(one)
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := newFakeClock(time.Now())
	runs := make(chan *RunResult, 16)
	reload := make(chan os.Signal, 1)
	var loadErr error
	var loadCfg *config.Config
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	pebble.Counter().Reset()
	go func() {
		done <- Daemon(ctx, DaemonOptions{
			Options: Options{Config: cfg, Store: st, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))},
			Load: func() (*config.Config, error) {
				return loadCfg, loadErr
			},
			Reload:   reload,
			Clock:    clock,
			MaxSleep: 30 * 24 * time.Hour, // every wait is the exact next check
			afterRun: func(r *RunResult) { runs <- r },
		})
	}()
	result := func(name string) Result {
		t.Helper()
		select {
		case res := <-runs:
			for _, r := range res.Results {
				if r.Name == name {
					return r
				}
			}
			t.Fatalf("run without %s: %+v", name, res.Results)
		case <-time.After(20 * time.Second):
			t.Fatal("no run")
		}
		return Result{}
	}
	if r := result("dm"); r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	first, err := st.LoadCertificate(ctx, "dm")
	if err != nil {
		t.Fatal(err)
	}
	if n := ariFetches(pebble); n != 0 {
		t.Errorf("renewalInfo requests while issuing = %d, want 0", n)
	}
	pebble.SetRenewalInfo(t, first.CertPEM, clock.Now().Add(-48*time.Hour), clock.Now().Add(-24*time.Hour))
	w := clock.next(t)
	if want := renewal.FirstARIFetch(first.Info.NotBefore, first.Info.NotAfter).Sub(clock.Now()); w.d != want {
		t.Fatalf("first wait = %s, want %s (until the first ARI fetch)", w.d, want)
	}
	clock.elapse(w)
	if r := result("dm"); r.Action != ActionRenewed || r.Err != nil || !strings.Contains(r.Reason, "ARI window") {
		t.Fatalf("run at the first ARI fetch = %s %q %v, want renewed by the ARI window", r.Action, r.Reason, r.Err)
	}
	second, err := st.LoadCertificate(ctx, "dm")
	if err != nil {
		t.Fatal(err)
	}

	renewed := false
	for i := 0; i < 40 && !renewed; i++ {
		w := clock.next(t)
		m, err := readMeta(ctx, st, "dm", nil)
		if err != nil {
			t.Fatal(err)
		}
		next := m.Renewal.ARINextFetch
		if c := m.Renewal.ARIChosen; !c.IsZero() {
			next = minTime(next, c)
		}
		want := max(next.Sub(clock.Now()), MinRecheck)
		if w.d != want {
			t.Fatalf("wait %d = %s, want %s (until the next ARI fetch or the chosen time)", i, w.d, want)
		}
		clock.elapse(w)
		r := result("dm")
		if r.Err != nil {
			t.Fatalf("run %d: %v", i, r.Err)
		}
		renewed = r.Action == ActionRenewed
	}
	if !renewed {
		t.Fatal("the daemon did not renew the certificate")
	}
	v, _ := st.LoadCertificate(ctx, "dm")
	if v.Info.Serial == second.Info.Serial {
		t.Fatal("current certificate unchanged after renewal")
	}
	st0, _ := readMeta(ctx, st, "dm", nil)
	if len(st0.Renewal.Orders) != 3 {
		t.Errorf("orders recorded = %d, want 3", len(st0.Renewal.Orders))
	}
	if ev := e.event("dm.renew"); ev["previous_serial"] != second.Info.Serial {
		t.Errorf("renew event previous_serial = %v, want %s", ev["previous_serial"], second.Info.Serial)
	}

	// An invalid configuration is refused and the daemon sleeps on.
	clock.next(t)
	loadErr = errors.New("acmehook.toml:3: broken")
	reload <- syscall.SIGHUP
	clock.next(t)
	if len(runs) != 0 {
		t.Error("a run followed the invalid reload, want the previous configuration kept")
	}

	// A valid one replaces it: every certificate is checked at once.
	loadErr, loadCfg = nil, e.write(one+"[[certificate]]\nname = \"dm2\"\ndomains = [\"dm2.example.com\"]\nsolver = \"webroot\"\n")
	reload <- syscall.SIGHUP
	if r := result("dm2"); r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("after reloading, dm2 = %s %v, want issued", r.Action, r.Err)
	}
	clock.next(t)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Daemon = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not stop")
	}
	st.Close() // the daemon's lock, for e.order
	if got, want := e.order(cfg, second).Replaces, ariCertID(t, first); got != want {
		t.Errorf("renewal order at the first ARI fetch replaces %q, want %q (the first certificate's ARI CertID)", got, want)
	}
}

// childrenRunning returns the pids of this process's children running the
// executable exe.
func childrenRunning(t *testing.T, exe string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	var pids []int
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc", d.Name(), "exe")); err != nil || target != exe {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPluginRelaunch: a plugin process that died is forgotten before the
// daemon's next run and launched again, and the run issues through it.
func TestPluginRelaunch(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"relaunch\"\ndomains = [\"relaunch.example.com\"]\nsolver = \"webroot\"\n")
	e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
		ctx := context.Background()
		p1, err := eng.plugins.get(ctx, "webroot")
		if err != nil {
			t.Fatal(err)
		}
		pids := childrenRunning(t, bins["webroot"])
		if len(pids) != 1 {
			t.Fatalf("webroot processes = %v, want one", pids)
		}
		if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for i := 0; !p1.Exited(); i++ {
			if i == 500 {
				t.Fatal("the killed plugin is not seen as exited")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := eng.plugins.forgetDead(); len(got) != 1 || got[0] != "webroot" {
			t.Fatalf("forgetDead = %v, want [webroot]", got)
		}
		res, err := eng.Run(ctx, RunOptions{})
		if err != nil || !res.OK() || res.Results[0].Action != ActionIssued {
			t.Fatalf("run after the plugin died = %+v, %v; want issued", res, err)
		}
		p2, _ := eng.plugins.get(ctx, "webroot")
		if p2 == p1 || p2.Exited() {
			t.Errorf("the plugin was not launched again")
		}
	})
}

// readCounter counts, per certificate, the metadata reads through its
// Backend.
type readCounter struct {
	store.Backend
	mu    sync.Mutex
	reads map[string]int
}

// Get counts the reads of each certificate's metadata by name, and those
// of the account's files as "account".
func (b *readCounter) Get(ctx context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	if rest, ok := strings.CutPrefix(key, "certificates/"); ok && strings.HasSuffix(key, "/meta.json") {
		b.reads[rest[:strings.IndexByte(rest, '/')]]++
	} else if strings.HasPrefix(key, "accounts/") {
		b.reads["account"]++
	}
	b.mu.Unlock()
	return b.Backend.Get(ctx, key)
}

func (b *readCounter) take() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.reads
	b.reads = map[string]int{}
	return r
}

// TestDaemonReadsOnlyDue: the daemon's work follows the certificates that
// are due. At start it reads each certificate's state once (the run's
// decision also gives the next check, and so does the issuance of the one
// not issued yet); at the next wake, for the one
// 6-day certificate whose renewal information is due first, it reads only
// that certificate, and runs only it.
func TestDaemonReadsOnlyDue(t *testing.T) {
	e := newEnv(t)
	var certs strings.Builder
	for i := range 10 {
		fmt.Fprintf(&certs, "[[certificate]]\nname = \"rd%d\"\ndomains = [\"rd%d.example.com\"]\nsolver = \"webroot\"\nprofile = \"default\"\n", i, i)
	}
	certs.WriteString("[[certificate]]\nname = \"short\"\ndomains = [\"short.rd.example.com\"]\nsolver = \"webroot\"\nprofile = \"shortlived\"\n")
	cfg := e.write(certs.String())
	for n, r := range e.run(cfg, RunOptions{}) {
		if r.Action != ActionIssued || r.Err != nil {
			t.Fatalf("%s: first run = %s %v, want issued", n, r.Action, r.Err)
		}
	}
	// One more, issued by the daemon's first cycle.
	cfg = e.write(certs.String() + "[[certificate]]\nname = \"fresh\"\ndomains = [\"fresh.rd.example.com\"]\nsolver = \"webroot\"\nprofile = \"default\"\n")
	var counter *readCounter
	st := openThrough(t, cfg, func(fb store.Backend) store.Backend {
		counter = &readCounter{Backend: fb, reads: map[string]int{}}
		return counter
	})
	defer st.Close()
	clock := newFakeClock(time.Now())
	runs := make(chan *RunResult, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Daemon(ctx, DaemonOptions{
			Options:  Options{Config: cfg, Store: st, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))},
			Clock:    clock,
			MaxSleep: 30 * 24 * time.Hour,
			afterRun: func(r *RunResult) { runs <- r },
		})
	}()
	run := func() *RunResult {
		t.Helper()
		select {
		case r := <-runs:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no run")
			return nil
		}
	}
	if r := run(); len(r.Results) != 12 || r.Results[11].Action != ActionIssued {
		t.Fatalf("first cycle = %+v, want 12 certificates checked, fresh issued", r.Results)
	}
	w := clock.next(t)
	first := counter.take()
	for i := range 10 {
		if n := first[fmt.Sprintf("rd%d", i)]; n != 1 {
			t.Errorf("metadata reads of rd%d in the first cycle = %d, want 1", i, n)
		}
	}
	// Issued and deployed: its next check comes from what the job wrote.
	if n := first["fresh"]; n != 1 {
		t.Errorf("metadata reads of fresh, issued in the first cycle = %d, want 1", n)
	}
	clock.elapse(w)
	r := run()
	if len(r.Results) != 1 || r.Results[0].Name != "short" || r.Results[0].Err != nil {
		t.Fatalf("second cycle = %+v, want only short, checked", r.Results)
	}
	clock.next(t)
	reads := counter.take()
	delete(reads, "account") // two days later: the daily look at the CA's terms
	if len(reads) != 1 || reads["short"] == 0 {
		t.Errorf("metadata reads in the second cycle = %v, want short's only", reads)
	}
	cancel()
	<-done
}

// TestAssignment: a certificate is in one run of the daemon at a time. One
// waiting in an older run moves to a newer run (the older one skips it);
// one whose job is running stays with its run and is looked at again at
// once when the job ends; a run that ends without running some of its
// certificates gives them back.
func TestAssignment(t *testing.T) {
	a := newAssignment()
	if got := a.hand(1, []string{"x", "y", "z"}); !slices.Equal(got, []string{"x", "y", "z"}) {
		t.Fatalf("hand(1) = %v, want all three", got)
	}
	if !a.take(1, "x") {
		t.Fatal("take(1, x) = false, want true")
	}
	// x is running in run 1; y waits in run 1.
	if got := a.hand(2, []string{"x", "y"}); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("hand(2, x y) = %v, want [y] (x is running)", got)
	}
	if a.take(1, "y") {
		t.Error("take(1, y) = true after y moved to run 2")
	}
	if !a.take(2, "y") {
		t.Error("take(2, y) = false, want true")
	}
	at := time.Unix(1000, 0)
	a.end(1, "x", at)
	a.end(2, "y", at)
	select {
	case <-a.signal:
	default:
		t.Error("no signal after jobs ended")
	}
	want := []endedJob{{"x", at, true}, {"y", at, false}}
	if got := a.takeEnded(); !slices.Equal(got, want) {
		t.Errorf("takeEnded() = %v, want %v", got, want)
	}
	if got := a.takeEnded(); len(got) != 0 {
		t.Errorf("takeEnded() again = %v, want nothing", got)
	}
	// x can be handed again now that its job ended.
	if got := a.hand(3, []string{"x"}); !slices.Equal(got, []string{"x"}) {
		t.Errorf("hand(3, x) = %v, want [x]", got)
	}
	// Run 1 ends: z, which it never ran, is given back; nothing else.
	if got := a.release(1); !slices.Equal(got, []string{"z"}) {
		t.Errorf("release(1) = %v, want [z]", got)
	}
	if got := a.release(3); !slices.Equal(got, []string{"x"}) {
		t.Errorf("release(3) = %v, want [x]", got)
	}
	if got := a.release(1); len(got) != 0 {
		t.Errorf("release(1) again = %v, want nothing", got)
	}
}
