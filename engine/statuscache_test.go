package engine

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/scalefixture"
)

// scrapeCerts GETs /metrics from h and parses it with Prometheus's text
// parser; it returns each certificate's gauge of family name.
func scrapeCerts(t *testing.T, h http.Handler, name string) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	out := map[string]float64{}
	for _, m := range mfs[name].GetMetric() {
		out[labelValue(m, "certificate")] = m.GetGauge().GetValue()
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// cacheFixture is a storage of n current certificates (scalefixture, no
// CA), read through a readCounter, and a settable clock.
type cacheFixture struct {
	opts      Options
	counter   *readCounter
	notAfter  time.Time
	mu        sync.Mutex
	clock     time.Time
	notBefore time.Time
}

func (f *cacheFixture) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clock
}

func (f *cacheFixture) set(t time.Time) {
	f.mu.Lock()
	f.clock = t
	f.mu.Unlock()
}

func newCacheFixture(t *testing.T, n int) *cacheFixture {
	t.Helper()
	cfg := newEnv(t).write(scalefixture.Certificates(n, "webroot"))
	f := &cacheFixture{notBefore: time.Now().Add(-time.Hour).Truncate(time.Second)}
	f.clock = f.notBefore.Add(time.Hour)
	f.notAfter = f.notBefore.Add(90 * 24 * time.Hour)
	meta := &Meta{Events: []MetaEvent{{Time: f.notBefore, Name: "issued", Result: "ok"}}}
	meta.Renewal.RecordSuccess(f.notBefore, renewal.Certificate{NotBefore: f.notBefore, NotAfter: f.notAfter})
	state, err := meta.encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := scalefixture.Populate(cfg.Storage, n, f.notBefore, f.notAfter, state); err != nil {
		t.Fatal(err)
	}
	st := openThrough(t, cfg, func(fb store.Backend) store.Backend {
		f.counter = &readCounter{Backend: fb, reads: map[string]int{}}
		return f.counter
	})
	t.Cleanup(func() { st.Close() })
	f.opts = Options{Config: cfg, Store: st, Now: f.now, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	return f
}

// TestDaemonScrapeReadsNothing: once the daemon has looked at every
// certificate, a metrics scrape reports them all (parsed with the real
// Prometheus text parser) without reading the storage.
func TestDaemonScrapeReadsNothing(t *testing.T) {
	const n = 12
	f := newCacheFixture(t, n)
	rec := metrics.New()
	f.opts.Metrics = rec
	clock := newFakeClock(f.now())
	ran := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Daemon(ctx, DaemonOptions{Options: f.opts, Clock: clock, MaxSleep: 30 * 24 * time.Hour,
			afterRun: func(*RunResult) { ran <- struct{}{} }})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon's first cycle did not end")
	}
	clock.next(t) // asleep: the first check is over
	f.counter.take()
	got := scrapeCerts(t, rec.Handler(nil), "acmehook_certificate_not_after_timestamp_seconds")
	if reads := f.counter.take(); len(reads) != 0 {
		t.Errorf("the scrape read the metadata of %v, want nothing", reads)
	}
	if len(got) != n || got[scalefixture.Name(n-1)] != float64(f.notAfter.Unix()) {
		t.Errorf("not_after of %d certificates (%s: %v), want %d at %d", len(got), scalefixture.Name(n-1), got[scalefixture.Name(n-1)], n, f.notAfter.Unix())
	}
}

// TestScrapeAfterWrite: what the engine writes of a certificate is read
// again by the next scrape (that certificate only), and when its next
// check comes, every certificate is read again.
func TestScrapeAfterWrite(t *testing.T) {
	const n = 12
	f := newCacheFixture(t, n)
	rec := metrics.New()
	f.opts.Metrics = rec
	eng, err := New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx := context.Background()
	eng.List(ctx)
	f.counter.take()
	failures := func() map[string]float64 {
		return scrapeCerts(t, rec.Handler(nil), "acmehook_certificate_consecutive_failures")
	}
	if got := failures(); len(got) != n || got["s00003"] != 0 {
		t.Fatalf("failures = %v, want %d certificates at 0", got, n)
	}
	if reads := f.counter.take(); len(reads) != 0 {
		t.Errorf("a scrape after List read %v, want nothing", reads)
	}

	meta, err := eng.loadMeta(ctx, "s00003")
	if err != nil {
		t.Fatal(err)
	}
	meta.Renewal.RecordFailure(renewal.Failure{Err: "boom"}, f.now(), nil)
	if err := eng.saveMeta(ctx, "s00003", meta); err != nil {
		t.Fatal(err)
	}
	f.counter.take()
	if got := failures(); got["s00003"] != 1 || got["s00004"] != 0 {
		t.Errorf("failures after s00003 failed = s00003 %v, s00004 %v; want 1 and 0", got["s00003"], got["s00004"])
	}
	if reads := f.counter.take(); len(reads) != 1 || reads["s00003"] != 1 {
		t.Errorf("the scrape after a write read %v, want s00003 once", reads)
	}
	if got := failures(); got["s00003"] != 1 {
		t.Errorf("failures of s00003 = %v at the next scrape, want 1", got["s00003"])
	}
	if reads := f.counter.take(); len(reads) != 0 {
		t.Errorf("the next scrape read %v, want nothing", reads)
	}

	// Past the first renewal-information fetch (at most 3 days after
	// issuance), every certificate's status may have changed.
	f.set(f.notBefore.Add(renewal.MaxFirstARIDelay + time.Minute))
	failures()
	if reads := f.counter.take(); len(reads) != n {
		t.Errorf("the scrape past the next check read %d certificates, want %d", len(reads), n)
	}
}

// TestStatusCache: a fill whose read began before a write (or before
// everything was forgotten) is refused; an entry read while this node
// owned the certificate is not used once it does not, nor after its time.
func TestStatusCache(t *testing.T) {
	c := newStatusCache()
	now := time.Now()
	m := metrics.Certificate{Name: "a", Failures: 1}
	g := c.generation("a")
	c.forget("a")
	c.fill("a", g, m, now.Add(time.Hour), true)
	if _, ok := c.get("a", now, true); ok {
		t.Error("a fill begun before a write was kept")
	}
	g = c.generation("a")
	c.forgetAll()
	c.fill("a", g, m, now.Add(time.Hour), true)
	if _, ok := c.get("a", now, true); ok {
		t.Error("a fill begun before forgetAll was kept")
	}
	g = c.generation("a")
	c.fill("a", g, m, now.Add(time.Hour), true)
	for _, tc := range []struct {
		at    time.Time
		owned bool
		ok    bool
	}{
		{now, true, true},
		{now, false, false},
		{now.Add(time.Hour), true, false},
	} {
		if got, ok := c.get("a", tc.at, tc.owned); ok != tc.ok || ok && got != m {
			t.Errorf("get at %s, owned %v = %+v, %v; want %v", tc.at.Sub(now), tc.owned, got, ok, tc.ok)
		}
	}
	c.forget("a")
	if _, ok := c.get("a", now, true); ok {
		t.Error("an entry outlived forget")
	}
}
