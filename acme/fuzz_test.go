package acme

import (
	"net/url"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to every response decoder: they must
// return an error or a value, never panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"newNonce":"https://a/n","newAccount":"https://a/a","newOrder":"https://a/o","meta":{"profiles":{"a":"b"}}}`,
		`{"status":"valid","identifiers":[{"type":"dns","value":"a"}],"error":{"type":"x","subproblems":[{"identifier":{"type":"dns","value":"a"}}]}}`,
		`{"identifier":{"type":"dns","value":"a"},"challenges":[{"type":"x","url":"https://a","token":"t"}]}`,
		`{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"}}`,
		`{"type":"urn:ietf:params:acme:error:badSignatureAlgorithm","detail":"ES256 RS256"}`,
		`[`, `null`, `{"challenges":[null]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Directory
		_ = decode(b, &d)
		var a Account
		_ = decode(b, &a)
		var o Order
		_ = decode(b, &o)
		var az Authorization
		if decode(b, &az) == nil {
			for _, ch := range az.Challenges {
				ch.Recognized()
			}
			_ = (&ValidationError{Authorizations: []Authorization{az}}).Error()
		}
		var p Problem
		if decode(b, &p) == nil {
			p.fillAlgorithms()
			_ = p.Error()
		}
		if ri, err := decodeRenewalInfo(b); err == nil {
			ri.RenewalTime(time.Now())
		}
		_, _ = ParseChainPEM(b)
	})
}

// FuzzParseRetryAfter checks the header parser never panics nor returns a
// negative delay.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Fri, 02 Jan 2026 03:05:05 GMT", "", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseRetryAfter(s, now); d < 0 || (err != nil && d != 0) {
			t.Errorf("ParseRetryAfter(%q) = %v, %v", s, d, err)
		}
	})
}

// FuzzParseLinks checks the Link parser never panics and only returns
// absolute URLs.
func FuzzParseLinks(f *testing.F) {
	for _, s := range []string{`<https://a/b>;rel="alternate"`, `</x>; rel=up, <y>;rel="index alternate"`, `<`, `<>;rel=`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, urls := range parseLinks("https://ca.example/cert/1", []string{s}) {
			for _, u := range urls {
				if p, err := url.Parse(u); err != nil || !p.IsAbs() {
					t.Errorf("parseLinks(%q) gave %q, not an absolute URL", s, u)
				}
			}
		}
	})
}
