package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hundred is how many certificates BenchmarkHundredCertificates issues each
// way.
const hundred = 100

// BenchmarkHundredCertificates issues 100 distinct certificates (http-01
// through the real webroot plugin, validated for real by Pebble, no
// authorization reuse) twice: in one `acmehook run` with the default
// concurrency, and in 100 `acmehook run` processes of one certificate each,
// sharing one storage and account. It reports both wall times, the
// speedup of the single run, the requests each way and the peak RSS of the
// single run's process (its own rusage; Linux reports the largest of the
// process and its reaped children, the plugins).
func BenchmarkHundredCertificates(b *testing.B) {
	var one, many time.Duration
	var oneReqs, manyReqs int
	var rssKiB int64
	for range b.N {
		// One run with 100 certificates.
		s := newSite(b)
		var certs strings.Builder
		for i := range hundred {
			fmt.Fprintf(&certs, "[[certificate]]\nname = \"c%03d\"\ndomains = [\"c%03d.one.bench.example.com\"]\nsolver = \"webroot\"\n", i, i)
		}
		s.write(certs.String())
		pebble.Counter().Reset()
		o := s.acmehook("run")
		if o.code != 0 || strings.Count(o.stdout, " issued ") != hundred {
			b.Fatalf("one run of %d certificates: %s", hundred, o)
		}
		_, reqs := pebble.Counter().Snapshot()
		one += o.elapsed
		oneReqs += reqs
		rssKiB = max(rssKiB, o.rusage.Maxrss)

		// 100 runs of one certificate each, on one storage.
		s = newSite(b)
		base := s.config
		pebble.Counter().Reset()
		for i := range hundred {
			s.config = filepath.Join(s.work.Dir, fmt.Sprintf("c%03d.toml", i))
			s.text = baseConfig(filepath.Join(s.work.Dir, "unserved")) + fmt.Sprintf("[[certificate]]\nname = \"c%03d\"\ndomains = [\"c%03d.many.bench.example.com\"]\nsolver = \"webroot\"\n", i, i)
			if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
				b.Fatal(err)
			}
			o := s.acmehook("run")
			if o.code != 0 || !strings.Contains(o.stdout, " issued ") {
				b.Fatalf("run %d of one certificate: %s", i, o)
			}
			many += o.elapsed
		}
		s.config = base
		_, reqs = pebble.Counter().Snapshot()
		manyReqs += reqs
	}
	n := float64(b.N)
	b.ReportMetric(one.Seconds()/n, "one-run-s")
	b.ReportMetric(many.Seconds()/n, "100-runs-s")
	b.ReportMetric(many.Seconds()/one.Seconds(), "speedup")
	b.ReportMetric(float64(oneReqs)/n/hundred, "one-run-requests/cert")
	b.ReportMetric(float64(manyReqs)/n/hundred, "100-runs-requests/cert")
	b.ReportMetric(float64(rssKiB)/1024, "peak-RSS-MiB")
}
