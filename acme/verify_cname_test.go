package acme_test

import (
	"context"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// TestVerifyDNS01CNAME: a _acme-challenge name delegated by CNAME to
// another zone (as dnsexec's propagation wait follows it) passes when the
// record is served at the target, and fails naming the original name
// when the target holds the wrong value.
func TestVerifyDNS01CNAME(t *testing.T) {
	const ka = "tok.thumb"
	for _, c := range []struct{ from, to string }{
		{"_acme-challenge.delegated.example.", "delegated-example.acme.delegate.example.net."},
		{"_acme-challenge.wrongdelegated.example.", "wrongdelegated-example.acme.delegate.example.net."},
	} {
		pebble.DNS.AddDNSCNAMERecord(c.from, c.to)
		t.Cleanup(func() { pebble.DNS.DeleteDNSCNAMERecord(c.from) })
	}
	setTXT(t, "delegated-example.acme.delegate.example.net.", acme.DNS01TXTRecord(ka))
	setTXT(t, "wrongdelegated-example.acme.delegate.example.net.", acme.DNS01TXTRecord("other"))
	tests := []struct {
		domain string
		want   acme.VerifyReason
	}{
		{"delegated.example", ""},
		{"*.delegated.example", ""},
		{"wrongdelegated.example", acme.VerifyWrongRecord},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, Timeout: 2 * time.Second}
			wantReason(t, v.DNS01(context.Background(), tt.domain, ka), tt.want)
		})
	}
}
