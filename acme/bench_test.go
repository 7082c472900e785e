package acme_test

import (
	"fmt"
	"testing"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// BenchmarkIssue measures one dns-01 issuance with an existing account
// against in-process Pebble, default client settings.
func BenchmarkIssue(b *testing.B) {
	s := startPebble(b, pebbletest.Options{})
	c := newClient(s)
	acct := newAccount(b, c)
	ids := []acme.Identifier{acme.DNS("bench.example.com")}
	s.Counter().Reset()
	b.ResetTimer()
	for range b.N {
		issue(b, c, s, acct, acme.Order{Identifiers: ids}, dns01)
	}
	b.StopTimer()
	_, total := s.Counter().Snapshot()
	b.ReportMetric(float64(total)/float64(b.N), "requests/op")
}

// BenchmarkObtainCertificate measures ObtainCertificate (dns-01, an
// existing account, default client settings) for one name and for 20
// names solved concurrently, against in-process Pebble.
func BenchmarkObtainCertificate(b *testing.B) {
	for _, n := range []int{1, 20} {
		b.Run(fmt.Sprintf("%d names", n), func(b *testing.B) {
			s := startPebble(b, pebbletest.Options{})
			c := newClient(s)
			acct := newAccount(b, c)
			var ids []acme.Identifier
			for i := range n {
				ids = append(ids, acme.DNS(fmt.Sprintf("n%d.bench%d.example.com", i, n)))
			}
			sol := &dnsSolver{s: s}
			s.Counter().Reset()
			b.ResetTimer()
			for range b.N {
				if _, err := c.ObtainCertificate(testCtx(b), acct, acme.CertificateRequest{Identifiers: ids, Key: newKey(b), Solver: sol}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_, total := s.Counter().Snapshot()
			b.ReportMetric(float64(total)/float64(b.N), "requests/op")
		})
	}
}
