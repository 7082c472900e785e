package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// TestUserActionRequired: a CA answering the order with userActionRequired
// has the certificate's scripts get user-action-required with the
// problem's instance URL, then failed, and the run says where to go.
func TestUserActionRequired(t *testing.T) {
	e := newEnv(t)
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	cfg := e.write("[[certificate]]\nname = \"ua\"\ndomains = [\"ua.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	instance := "https://ca.example/agreement/42"
	p.Add(pebbletest.Fault{Kind: "POST /order-plz", Times: 1, Status: http.StatusForbidden, Type: acme.ProblemUserActionRequired,
		Detail: "agree to the new terms first", Instance: instance})
	e.logs = &bytes.Buffer{}
	r := e.runWith(cfg, Options{Logger: testLogger(t, e.logs)}, RunOptions{})["ua"]
	if p := problemOf(r.Err); r.Action != ActionFailed || p == nil || p.Type != acme.ProblemUserActionRequired {
		t.Fatalf("run = %s %v, want failed with userActionRequired", r.Action, r.Err)
	}
	ev := e.event("ua.user-action-required")
	evErr, _ := ev["error"].(map[string]any)
	if evErr["problem_instance"] != instance || evErr["problem_type"] != acme.ProblemUserActionRequired || evErr["problem_detail"] != "agree to the new terms first" || ev["cert_name"] != "ua" {
		t.Errorf("user-action-required event = %v, want the problem with instance %s", ev, instance)
	}
	e.event("ua.failed")
	if !strings.Contains(e.logs.String(), `level=ERROR msg="the CA requires a person to act before it issues again: visit the problem's instance URL" cert=ua instance=`+instance) {
		t.Errorf("no ERROR naming the instance URL in the log:\n%s", e.logs)
	}

	t.Run("another problem raises failed alone", func(t *testing.T) {
		os.RemoveAll(e.work.Events)
		os.Mkdir(e.work.Events, 0o755)
		p.Add(pebbletest.Fault{Kind: "POST /order-plz", Status: http.StatusForbidden, Type: acme.ProblemUnauthorized, Detail: "no"})
		r := e.runWith(cfg, Options{}, RunOptions{Force: true, Names: []string{"ua"}})["ua"]
		if r.Action != ActionFailed {
			t.Fatalf("run = %s %v, want failed", r.Action, r.Err)
		}
		e.event("ua.failed")
		if _, err := os.Stat(filepath.Join(e.work.Events, "ua.user-action-required.json")); err == nil {
			t.Error("user-action-required raised for an unauthorized problem")
		}
	})
}

// TestRenewalHeldInDaemon: in the daemon, a certificate whose renewal time
// has passed but whose order the reissue guard holds back gets
// renewal-held once, saying until when, why and that the certificate in
// service expires first (logged at ERROR), and not again at the daemon's
// hourly looks at it during the same hold.
func TestRenewalHeldInDaemon(t *testing.T) {
	e := newEnv(t)
	count := filepath.Join(e.work.Dir, "held.count")
	script := fmt.Sprintf(`local acmehook = require("acmehook")
acmehook.on("renewal-held", function(ev)
  local old = acmehook.files.read(%q) or ""
  assert(acmehook.files.write(%q, old .. ev.cert_name .. " " .. ev.held_until .. " " .. tostring(ev.expires_before_hold_ends) .. "\n"))
end)
`, count, count)
	if err := os.WriteFile(filepath.Join(e.work.Dir, "held.lua"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e.write("[[certificate]]\nname = \"hd\"\ndomains = [\"hd.held.example.com\"]\nsolver = \"webroot\"\nmax_orders = 1\nmax_orders_window = \"168h\"\nprofile = \"shortlived\"\nscripts = [\"events.lua\", \"held.lua\"]\n")
	start := time.Now()
	e.now = func() time.Time { return start }
	if r := e.run(cfg, RunOptions{})["hd"]; r.Action != ActionIssued {
		t.Fatalf("first run = %s %v", r.Action, r.Err)
	}
	v := e.current(cfg, "hd")
	holdEnd := e.meta(cfg, "hd").Renewal.Orders[0].Add(168 * time.Hour)

	// The renewal time is long past (a day before expiry), the guard's
	// one order in 7 days is used: held until the order ages out.
	clock := newFakeClock(v.Info.NotAfter.Add(-24 * time.Hour))
	runs := make(chan *RunResult, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := e.startDaemon(ctx, cfg, DaemonOptions{Clock: clock, MaxSleep: 30 * 24 * time.Hour, Options: Options{Logger: testLogger(t, logs)},
		afterRun: func(r *RunResult) { runs <- r }})
	for i := range 3 {
		select {
		case res := <-runs:
			if r := res.Results[0]; r.Action != ActionHeld {
				t.Fatalf("daemon cycle %d: %s = %s %q %v, want held", i, r.Name, r.Action, r.Reason, r.Err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("daemon cycle %d did not run", i)
		}
		w := clock.next(t)
		if w.d > HeldRecheck {
			t.Errorf("daemon sleeps %s after a held cycle, want at most %s", w.d, HeldRecheck)
		}
		clock.elapse(w)
	}
	cancel()
	stopped(t, done)

	want := fmt.Sprintf("hd %d true\n", holdEnd.Unix())
	if b, _ := os.ReadFile(count); string(b) != want {
		t.Errorf("renewal-held reached the script as %q over 3 daemon cycles, want once: %q", b, want)
	}
	ev := e.event("hd.renewal-held")
	if ev["serial"] != v.Info.Serial || ev["hold_reason"] == nil || !strings.Contains(ev["hold_reason"].(string), "order") || ev["not_after"] == nil {
		t.Errorf("renewal-held event = %v, want the certificate in service (serial %s) and the guard's reason", ev, v.Info.Serial)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"not ordering now, and the certificate in service expires before the hold ends\"") {
		t.Errorf("no ERROR for a certificate expiring before the hold ends:\n%s", logs)
	}
	if n := e.meta(cfg, "hd").HeldNotice; n == nil || !n.Until.Equal(holdEnd) || !n.Expiring {
		t.Errorf("held notice = %+v, want until %s, expiring", n, holdEnd)
	}
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs to the test's output and to w, at Info.
func testLogger(t *testing.T, w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), w), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestTOSChanged: the account records the terms it agreed to; a run with
// nothing to do within a day of the last look asks the CA nothing; a look
// a day later at a directory naming other terms (a proxy rewrites
// Pebble's, whose terms are a constant: pebbletest.FaultProxy) raises tos-changed once with both URLs
// and logs WARN, without agreeing; the next daily look raises nothing;
// with agree_tos_changes acmehook agrees (an account update) and says so.
func TestTOSChanged(t *testing.T) {
	e := newEnv(t)
	certs := "[[certificate]]\nname = \"tos\"\ndomains = [\"tos.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n"
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	cfg := e.write(certs)
	const newTerms = "https://ca.example/terms/2027.pdf"
	start := time.Now()
	run := func(after time.Duration, cfg *config.Config) (map[string]Result, string) {
		t.Helper()
		logs := &bytes.Buffer{}
		e.now = func() time.Time { return start.Add(after) }
		os.Remove(filepath.Join(e.work.Events, "run.tos-changed.json"))
		return e.runWith(cfg, Options{Logger: testLogger(t, logs)}, RunOptions{}), logs.String()
	}
	account := func() store.AccountInfo {
		t.Helper()
		st, err := store.Open(cfg.Storage, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		a, err := st.LoadAccount(context.Background(), cfg.CA.Directory)
		if err != nil {
			t.Fatal(err)
		}
		return a.Info
	}
	tosEvent := func() map[string]any {
		b, err := os.ReadFile(filepath.Join(e.work.Events, "run.tos-changed.json"))
		if err != nil {
			return nil
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	if r, _ := run(0, cfg); r["tos"].Action != ActionIssued {
		t.Fatalf("first run = %s %v", r["tos"].Action, r["tos"].Err)
	}
	agreed := account().TermsOfService
	if !strings.HasPrefix(agreed, "data:text/plain,") || !account().TermsCheckedAt.Equal(start) {
		t.Fatalf("account info = %+v, want Pebble's terms recorded as agreed, checked at the first run", account())
	}
	p.Add(pebbletest.Fault{Kind: "GET /dir", Rewrite: pebbletest.EditJSON(func(m map[string]any) {
		m["meta"].(map[string]any)["termsOfService"] = newTerms
	})})

	tests := []struct {
		name      string
		after     time.Duration
		agree     bool
		wantLook  bool // the directory fetched (afresh; renewal information and agreeing fetch it too)
		wantEvent bool // tos-changed raised
		wantAgree bool
	}{
		{"within a day: no request", time.Hour, false, false, false, false},
		{"a day later: changed terms announced", 25 * time.Hour, false, true, true, false},
		{"the next day: not again", 50 * time.Hour, false, true, false, false},
		{"agree_tos_changes: agreed", 75 * time.Hour, true, true, true, true},
		{"agreed: nothing more", 100 * time.Hour, true, true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.agree {
				e.caExtra = "agree_tos_changes = true"
				c = e.write(certs)
			}
			dirs, updates := p.Count("GET /dir"), p.Count("POST /my-account/")
			res, logs := run(tt.after, c)
			// (Days later the renewal information may have it renewed.)
			if r := res["tos"]; r.Err != nil {
				t.Fatalf("run = %s %v, want no error", r.Action, r.Err)
			}
			if got := p.Count("GET /dir") - dirs; (got > 0) != tt.wantLook {
				t.Errorf("directory fetched %d times, want a look: %t", got, tt.wantLook)
			}
			if tt.wantLook && !account().TermsCheckedAt.Equal(start.Add(tt.after)) {
				t.Errorf("terms checked at %s, want %s", account().TermsCheckedAt, start.Add(tt.after))
			}
			ev := tosEvent()
			if (ev != nil) != tt.wantEvent {
				t.Fatalf("tos-changed raised: %v, want %t", ev, tt.wantEvent)
			}
			if ev != nil && (ev["terms_of_service"] != newTerms || ev["previous_terms_of_service"] != agreed || ev["agreed"] != tt.wantAgree ||
				ev["account_url"] != account().URL || ev["cert_name"] != nil) {
				t.Errorf("tos-changed = %v, want %s after %s, agreed %t", ev, newTerms, agreed, tt.wantAgree)
			}
			warned := strings.Contains(logs, "level=WARN msg=\"the CA's terms of service changed")
			if warned != tt.wantEvent {
				t.Errorf("WARN logged: %t, want %t:\n%s", warned, tt.wantEvent, logs)
			}
			if updates := p.Count("POST /my-account/") - updates; (updates == 1) != tt.wantAgree {
				t.Errorf("%d account updates, want one only when agreeing", updates)
			}
			wantTerms := agreed
			if tt.agree {
				wantTerms = newTerms
			}
			if got := account().TermsOfService; got != wantTerms {
				t.Errorf("terms recorded as agreed = %q, want %q", got, wantTerms)
			}
		})
	}
}

// TestTOSChangedCachedDirectory: the directory a long-lived engine (a
// daemon) fetched when it first ordered is only a hint. Days old, it names
// the terms agreed to while another node of the fleet has announced new
// ones: an ordering run neither undoes that announcement nor asks the CA.
// Fresh, it names terms neither agreed to nor announced: the run looks at
// the directory afresh (one request) and announces them at once, before
// the daily look.
func TestTOSChangedCachedDirectory(t *testing.T) {
	e := newEnv(t)
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	cfg := e.write("[[certificate]]\nname = \"cached\"\ndomains = [\"cached.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	const newTerms = "https://ca.example/terms/cached.pdf"
	start := time.Now()
	now := start
	e.now = func() time.Time { return now }
	event := filepath.Join(e.work.Events, "run.tos-changed.json")
	// laterForcedRun edits the stored account info as another node would,
	// moves the clock to at, runs eng forced (a renewal) and returns how
	// many times the run fetched the directory.
	laterForcedRun := func(eng *Engine, st *store.Store, edit func(*store.AccountInfo), at time.Time) int {
		t.Helper()
		ctx := context.Background()
		a, err := st.LoadAccount(ctx, cfg.CA.Directory)
		if err != nil {
			t.Fatal(err)
		}
		edit(&a.Info)
		if err := st.SaveAccountInfo(ctx, cfg.CA.Directory, a.Info); err != nil {
			t.Fatal(err)
		}
		now = at
		dirs := p.Count("GET /dir")
		if res, err := eng.Run(ctx, RunOptions{Force: true}); err != nil || res.Results[0].Action != ActionRenewed {
			t.Fatalf("forced run = %+v, %v", res, err)
		}
		return p.Count("GET /dir") - dirs
	}
	e.withEngine(cfg, Options{}, func(eng *Engine, st *store.Store) {
		ctx := context.Background()
		if res, err := eng.Run(ctx, RunOptions{}); err != nil || res.Results[0].Action != ActionIssued {
			t.Fatalf("first run = %+v, %v", res, err)
		}
		p.Add(pebbletest.Fault{Kind: "GET /dir", Rewrite: pebbletest.EditJSON(func(m map[string]any) {
			m["meta"].(map[string]any)["termsOfService"] = newTerms
		})})
		// Another node looked an hour later and announced the new terms.
		announced := func(info *store.AccountInfo) {
			info.TermsAnnounced, info.TermsCheckedAt = newTerms, start.Add(time.Hour)
		}
		if got := laterForcedRun(eng, st, announced, start.Add(2*time.Hour)); got != 0 {
			t.Errorf("the forced run fetched the directory %d times, want none (its copy names the agreed terms)", got)
		}
		if b, err := st.LoadAccount(ctx, cfg.CA.Directory); err != nil || b.Info.TermsAnnounced != newTerms || !b.Info.TermsCheckedAt.Equal(start.Add(time.Hour)) {
			t.Errorf("account info after the run with a days-old directory = %+v (%v), want the other node's announcement and look kept", b.Info, err)
		}
		if _, err := os.Stat(event); err == nil {
			t.Errorf("tos-changed raised from a days-old directory")
		}
	})

	// A new engine's copy is fresh and names terms nobody announced yet.
	e.withEngine(cfg, Options{}, func(eng *Engine, st *store.Store) {
		ctx := context.Background()
		unannounced := func(info *store.AccountInfo) { info.TermsAnnounced = "" }
		if got := laterForcedRun(eng, st, unannounced, start.Add(3*time.Hour)); got != 2 {
			t.Errorf("the forced run fetched the directory %d times, want 2 (to order, then afresh to look at the terms)", got)
		}
		if ev := e.event("run.tos-changed"); ev["terms_of_service"] != newTerms {
			t.Errorf("tos-changed = %v, want %s announced by the ordering run", ev, newTerms)
		}
		if b, _ := st.LoadAccount(ctx, cfg.CA.Directory); b.Info.TermsAnnounced != newTerms || !b.Info.TermsCheckedAt.Equal(start.Add(3*time.Hour)) {
			t.Errorf("account info = %+v, want %s announced, looked at now", b.Info, newTerms)
		}
	})
}

// TestTOSAgreeRetried: with agree_tos_changes, an agreement the CA
// refused is tried again by the next run that orders (its directory names
// the new terms), not a day later.
func TestTOSAgreeRetried(t *testing.T) {
	e := newEnv(t)
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	e.caExtra = "agree_tos_changes = true"
	cfg := e.write("[[certificate]]\nname = \"agree\"\ndomains = [\"agree.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	const newTerms = "https://ca.example/terms/agree.pdf"
	start := time.Now()
	now := start
	e.now = func() time.Time { return now }
	e.withEngine(cfg, Options{}, func(eng *Engine, st *store.Store) {
		ctx := context.Background()
		if res, err := eng.Run(ctx, RunOptions{}); err != nil || res.Results[0].Action != ActionIssued {
			t.Fatalf("first run = %+v, %v", res, err)
		}
		p.Add(pebbletest.Fault{Kind: "GET /dir", Rewrite: pebbletest.EditJSON(func(m map[string]any) {
			m["meta"].(map[string]any)["termsOfService"] = newTerms
		})})
		p.Add(pebbletest.Fault{Kind: "POST /my-account/", Times: 1, Status: http.StatusBadRequest, Detail: "agreement refused (injected)"})
		now = start.Add(25 * time.Hour)
		if _, err := eng.Run(ctx, RunOptions{}); err != nil {
			t.Fatal(err)
		}
		if a, _ := st.LoadAccount(ctx, cfg.CA.Directory); a.Info.TermsAnnounced != newTerms || a.Info.TermsOfService == newTerms {
			t.Fatalf("after the refused agreement: account info %+v, want %s announced, not agreed", a.Info, newTerms)
		}
		updates := p.Count("POST /my-account/")
		now = start.Add(26 * time.Hour)
		if res, err := eng.Run(ctx, RunOptions{Force: true}); err != nil || res.Results[0].Action != ActionRenewed {
			t.Fatalf("forced run = %+v, %v", res, err)
		}
		if got := p.Count("POST /my-account/") - updates; got != 1 {
			t.Errorf("%d account updates by the ordering run an hour later, want 1 (the agreement tried again)", got)
		}
		if a, _ := st.LoadAccount(ctx, cfg.CA.Directory); a.Info.TermsOfService != newTerms {
			t.Errorf("account info %+v, want %s agreed to by the ordering run", a.Info, newTerms)
		}
	})
}

// TestTOSChangedIdleDaemon: a daemon with nothing due, waking hourly, looks
// at the CA's terms once a day: the changed terms are announced at the
// first wake a day after the last look, not before.
func TestTOSChangedIdleDaemon(t *testing.T) {
	e := newEnv(t)
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	cfg := e.write("[[certificate]]\nname = \"idle\"\ndomains = [\"idle.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n")
	start := time.Now()
	e.now = func() time.Time { return start }
	if r := e.run(cfg, RunOptions{})["idle"]; r.Action != ActionIssued {
		t.Fatalf("first run = %s %v", r.Action, r.Err)
	}
	p.Add(pebbletest.Fault{Kind: "GET /dir", Rewrite: pebbletest.EditJSON(func(m map[string]any) {
		m["meta"].(map[string]any)["termsOfService"] = "https://ca.example/new-terms#1"
	})})
	clock := newFakeClock(start.Add(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := e.startDaemon(ctx, cfg, DaemonOptions{Clock: clock, MaxSleep: time.Hour})
	event := filepath.Join(e.work.Events, "run.tos-changed.json")
	announced := time.Time{}
	for range 30 {
		w := clock.next(t)
		if _, err := os.Stat(event); err == nil {
			announced = clock.Now()
			break
		}
		clock.elapse(w)
	}
	cancel()
	stopped(t, done)
	if announced.IsZero() || announced.Before(start.Add(TermsCheckInterval)) || announced.After(start.Add(TermsCheckInterval+2*time.Hour)) {
		t.Fatalf("tos-changed reached the script at %s, want within the first hourly wake after %s", announced, start.Add(TermsCheckInterval))
	}
	if ev := e.event("run.tos-changed"); !strings.HasPrefix(ev["terms_of_service"].(string), "https://ca.example/new-terms#") {
		t.Errorf("tos-changed = %v, want the proxied terms", ev)
	}
}

// TestTermsLookRemembered: a long-lived engine (a daemon's) remembers the
// last look at the CA's terms, so a run within a day of it reads nothing
// of the account (a fleet's daemons end a run for every few certificates
// that another node stored); a day later the run reads the account and
// looks (one directory fetch), and the next run reads nothing again.
func TestTermsLookRemembered(t *testing.T) {
	e := newEnv(t)
	p := pebbletest.NewFaultProxy(t, pebble)
	e.srv = proxied(p)
	cfg := e.write("[[certificate]]\nname = \"remembered\"\ndomains = [\"remembered.example.com\"]\nsolver = \"webroot\"\n")
	var counter *readCounter
	st := openThrough(t, cfg, func(fb store.Backend) store.Backend {
		counter = &readCounter{Backend: fb, reads: map[string]int{}}
		return counter
	})
	defer st.Close()
	start := time.Now()
	now := start
	eng, err := New(Options{Config: cfg, Store: st, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx := context.Background()
	if res, err := eng.Run(ctx, RunOptions{}); err != nil || res.Results[0].Action != ActionIssued {
		t.Fatalf("first run = %+v, %v", res, err)
	}
	counter.take()
	for _, tt := range []struct {
		name         string
		after        time.Duration
		wantReads    bool // of the account's files
		wantDirFetch int
	}{
		{"an hour later", time.Hour, false, 0},
		{"a day later", 25 * time.Hour, true, 1},
		{"an hour after that", 26 * time.Hour, false, 0},
	} {
		now = start.Add(tt.after)
		dirs := p.Count("GET /dir")
		res, err := eng.Run(ctx, RunOptions{})
		if err != nil || res.Results[0].Action != ActionNone {
			t.Fatalf("%s: run = %+v, %v; want nothing to do", tt.name, res, err)
		}
		if got := counter.take()["account"]; (got > 0) != tt.wantReads {
			t.Errorf("%s: %d reads of the account's files, want some: %t", tt.name, got, tt.wantReads)
		}
		if got := p.Count("GET /dir") - dirs; got != tt.wantDirFetch {
			t.Errorf("%s: directory fetched %d times, want %d", tt.name, got, tt.wantDirFetch)
		}
	}
}
