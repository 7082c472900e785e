package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/scalefixture"
)

// scaleEngine is an engine on a storage of n current certificates laid
// out by scalefixture (no CA involved), each issued an hour ago, valid 90
// days, with the metadata a successful issuance leaves; path is its
// configuration file.
func scaleEngine(tb testing.TB, n int) (eng *Engine, path string) {
	tb.Helper()
	e := newEnv(tb)
	cfg := e.write(scalefixture.Certificates(n, "webroot"))
	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	notAfter := notBefore.Add(90 * 24 * time.Hour)
	meta := &Meta{Events: []MetaEvent{{Time: notBefore, Name: "issued", Result: "ok"}}}
	meta.Renewal.RecordSuccess(notBefore, renewal.Certificate{NotBefore: notBefore, NotAfter: notAfter})
	state, err := meta.encode()
	if err != nil {
		tb.Fatal(err)
	}
	if err := scalefixture.Populate(cfg.Storage, n, notBefore, notAfter, state); err != nil {
		tb.Fatal(err)
	}
	st, err := store.OpenReadOnly(cfg.Storage, store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	eng, err = New(Options{Config: cfg, Store: st, Metrics: metrics.New()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	return eng, filepath.Join(e.work.Dir, "acmehook.toml")
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScaleReads reads 10,000 stored certificates (1,000 with
// -short), laid out without a CA in seconds, as `acmehook list` and a
// metrics scrape do:
//
//   - load-config: config.Load of the 10,000 [[certificate]] entries beside
//     the [ca], [plugins] and [self_check] tables the engine tests use;
//   - list: Engine.List, every certificate's status from the storage;
//   - scrape: one GET /metrics of the daemon's handler (Prometheus text)
//     once the engine has read every certificate (List, as the daemon's
//     first check does): the state comes from the engine's status cache;
//   - scrape-uncached: the same with the cache emptied first, so every
//     certificate is read from the storage.
//
// cpu-ms/op beside ns/op says how much of the time is work and how much
// waiting (2 cores: up to twice the wall time).
//
//	go test -run '^$' -bench ScaleReads -benchtime 3x ./engine/
func BenchmarkScaleReads(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	eng, path := scaleEngine(b, n)
	ctx := context.Background()
	measure := func(name string, f func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				f(b)
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
	measure("load-config", func(b *testing.B) {
		cfg, err := config.Load(path)
		if err != nil || len(cfg.Certificates) != n {
			b.Fatalf("Load: %v", err)
		}
	})
	measure("list", func(b *testing.B) {
		list := eng.List(ctx)
		if len(list) != n || list[n-1].Next != NextNone || list[n-1].Err != nil {
			b.Fatalf("List: %d statuses, the last %+v", len(list), list[len(list)-1])
		}
	})
	srv := httptest.NewServer(eng.metrics.(*metrics.Metrics).Handler(nil))
	defer srv.Close()
	scrape := func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		req.Header.Set("Accept", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /metrics: %s, %v", resp.Status, err)
		}
		b.SetBytes(int64(len(body)))
	}
	measure("scrape", scrape)
	measure("scrape-uncached", func(b *testing.B) {
		eng.status.forgetAll()
		scrape(b)
	})
}
