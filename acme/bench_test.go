package acme_test

import (
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
