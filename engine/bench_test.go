package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/config"
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
			cfg := benchConfig(b, fmt.Sprintf("[[certificate]]\nname = \"bench\"\ndomains = [%q]\nsolver = %q\nchallenge = %q\n", tc.domain, tc.solver, tc.challenge))
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

// benchConfig writes and loads an acmehook.toml with the package's plugins
// and Pebble, self-checks on loopback, and certs.
func benchConfig(b *testing.B, certs string) *config.Config {
	b.Helper()
	dir := b.TempDir()
	text := fmt.Sprintf(`storage = "storage"
[ca]
directory = %q
ca_bundle = %q
agree_tos = true

[self_check]
http_port = %d
tls_port = %d
resolvers = [%q]

[plugins.webroot]
path = %q
[plugins.webroot.config]
root = %q

[plugins.standalone]
path = %q
[plugins.standalone.config]
tls_listen = ["127.0.0.1:%d"]
http_listen = []

[plugins.dnsexec]
path = %q
[plugins.dnsexec.config]
program = %q
resolvers = [%q]
propagation_interval = "50ms"
propagation_timeout = "10s"
env = { CHALLTESTSRV_URL = %q }
%s`, pebble.DirectoryURL, pebble.CAFile,
		pebble.HTTPPort, pebble.TLSPort, pebble.DNSAddr,
		bins["webroot"], webRoot,
		bins["standalone"], pebble.TLSPort,
		bins["dnsexec"], dnsProg, pebble.DNSAddr, pebble.DNSManagementURL,
		certs)
	path := filepath.Join(dir, "acmehook.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatalf("config.Load: %v\n%s", err, text)
	}
	return cfg
}
