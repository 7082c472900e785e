package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/internal/scalefixture"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// BenchmarkListBinary times the reads of 10,000 certificates (1,000 with
// -short) end to end with the real binary, on a storage laid out in
// seconds without a CA (internal/scalefixture: every certificate current,
// issued an hour ago):
//
//   - list-s, list-cpu-ms, list-peak-RSS-MiB: one `acmehook list` (process
//     start, config load, every certificate's state, the table), wall and
//     CPU time, peak RSS;
//   - list-json-s: `acmehook list --json`;
//   - scrape-ms, scrape-cpu-ms: one GET /metrics of `acmehook daemon`
//     (started on that storage, after its first check), wall time and
//     the daemon's CPU time for it.
//
// BenchmarkScale measures the same after issuing the certificates through
// Pebble, which takes minutes.
//
//	go test -run '^$' -bench ListBinary -benchtime 1x ./cmd/acmehook/
func BenchmarkListBinary(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	s := newSite(b)
	port, err := pebbletest.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	s.write(fmt.Sprintf("[metrics]\nlisten = \"127.0.0.1:%d\"\n\n", port) + scalefixture.Certificates(n, "webroot"))
	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	notAfter := notBefore.Add(90 * 24 * time.Hour)
	meta := engine.Meta{Events: []engine.MetaEvent{{Time: notBefore, Name: "issued", Result: "ok"}}}
	meta.Renewal.RecordSuccess(notBefore, renewal.Certificate{NotBefore: notBefore, NotAfter: notAfter})
	state, err := json.Marshal(meta)
	if err != nil {
		b.Fatal(err)
	}
	if err := scalefixture.Populate(filepath.Join(filepath.Dir(s.config), "storage"), n, notBefore, notAfter, state); err != nil {
		b.Fatal(err)
	}
	report := func(v float64, unit string) {
		b.ReportMetric(v, unit)
		b.Logf("%d certificates: %.4g %s", n, v, unit)
	}
	for range b.N {
		o := s.acmehook("list")
		if o.code != 0 || strings.Count(o.stdout, "\n") != n+1 || !strings.Contains(o.stdout, scalefixture.Domain(n-1)) {
			b.Fatalf("acmehook list: %s", o)
		}
		report(o.elapsed.Seconds(), "list-s")
		report(float64(cpuOf(o.rusage).Milliseconds()), "list-cpu-ms")
		report(float64(o.rusage.Maxrss)/1024, "list-peak-RSS-MiB")
		o = s.acmehook("list", "--json")
		if o.code != 0 || !strings.Contains(o.stdout, scalefixture.Domain(n-1)) {
			b.Fatalf("acmehook list --json: %s", o)
		}
		report(o.elapsed.Seconds(), "list-json-s")

		d := startTraced(b, s, "daemon")
		if !d.waitLog(`msg="next check"`, 5*time.Minute) {
			d.stop()
			b.Fatalf("the daemon did not finish its first check:\n%s", d.tail())
		}
		time.Sleep(time.Second) // the first cycle's garbage collected
		cpu0, t0 := d.cpu(), time.Now()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		elapsed := time.Since(t0)
		time.Sleep(100 * time.Millisecond) // /proc's CPU time is in ticks
		cpu := d.cpu() - cpu0
		d.stop()
		if err != nil || resp.StatusCode != http.StatusOK || strings.Count(string(body), "acmehook_certificate_not_after_timestamp_seconds{") != n {
			b.Fatalf("GET /metrics: %s %v, %d bytes", resp.Status, err, len(body))
		}
		report(float64(elapsed.Milliseconds()), "scrape-ms")
		report(float64(cpu.Milliseconds()), "scrape-cpu-ms")
	}
}

// cpuOf is the user and system time in ru.
func cpuOf(ru *syscall.Rusage) time.Duration {
	if ru == nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
