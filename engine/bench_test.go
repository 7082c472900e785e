package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/store"
)

// BenchmarkIssue measures one issuance through the engine per solver, the
// real plugin binary presenting a challenge that Pebble really validates
// (no authorization reuse, no rejected nonces): order, authorization,
// Present, self-check, answer, poll, finalize, download, store, deploy. The
// account exists and the plugin runs before the timer starts, as for every
// certificate of a run but the first. requests/op counts what the CA served.
func BenchmarkIssue(b *testing.B) {
	for _, tc := range []struct {
		solver, domain, challenge string
	}{
		{"standalone", "bench-alpn.example.com", "tls-alpn-01"},
		{"webroot", "bench-web.example.com", ""},
		{"dnsexec", "*.bench-dns.example.com", ""},
	} {
		b.Run(tc.solver, func(b *testing.B) {
			cfg := newEnv(b).write(fmt.Sprintf("[[certificate]]\nname = \"bench\"\ndomains = [%q]\nsolver = %q\nchallenge = %q\n", tc.domain, tc.solver, tc.challenge))
			st, err := store.Open(cfg.Storage, store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			eng, err := New(Options{Config: cfg, Store: st})
			if err != nil {
				b.Fatal(err)
			}
			defer eng.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			issue := func(want Action) {
				res, err := eng.Run(ctx, RunOptions{Names: []string{"bench"}, Force: true})
				if err != nil || res.Results[0].Action != want || res.Results[0].Err != nil {
					b.Fatalf("Run = %+v, %v; want %s", res, err, want)
				}
			}
			issue(ActionIssued) // account and plugin
			pebble.Counter().Reset()
			b.ResetTimer()
			for range b.N {
				issue(ActionRenewed)
			}
			b.StopTimer()
			counts, total := pebble.Counter().Snapshot()
			b.ReportMetric(float64(total)/float64(b.N), "requests/op")
			keys := make([]string, 0, len(counts))
			for k, n := range counts {
				keys = append(keys, fmt.Sprintf("%s %.2f", k, float64(n)/float64(b.N)))
			}
			slices.Sort(keys)
			b.Logf("requests per issuance (N=%d): %s", b.N, strings.Join(keys, ", "))
		})
	}
}
