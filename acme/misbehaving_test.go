package acme_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// proxyClient returns a client of the CA behind the proxy, which trusts it.
func proxyClient(p *pebbletest.FaultProxy) *acme.Client {
	return &acme.Client{
		DirectoryURL: p.DirectoryURL,
		HTTPClient:   p.HTTPClient(),
		PollInterval: 20 * time.Millisecond,
	}
}

// TestMisbehavingCA runs whole issuances through a proxy that makes a
// real Pebble misbehave, and asserts the exact error of each fault (issue
// 13). The proxy cannot sign with Pebble's key, so its forged leaves are
// signed by a throwaway key: the name, validity and CA checks come before
// the signature check and are what refuse the wrong-name, expired and CA
// leaves; an otherwise correct forged leaf is the broken chain.
func TestMisbehavingCA(t *testing.T) {
	s := startPebble(t, pebbletest.Options{})
	tests := []struct {
		name   string
		ids    []acme.Identifier
		faults func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault
		// pollTimeout shortens the client's waits.
		pollTimeout time.Duration
		// check asserts the error; presents is how many Present calls the
		// solver should see.
		check    func(t *testing.T, err error, p *pebbletest.FaultProxy)
		presents int
	}{
		{
			name: "order stuck processing",
			ids:  dnsIDs("stuck-order.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{
					{Kind: "POST /finalize-order/", Rewrite: pebbletest.SetStatus(acme.StatusProcessing)},
					{Kind: "POST /my-order/", Rewrite: pebbletest.SetStatus(acme.StatusProcessing)},
				}
			},
			pollTimeout: 300 * time.Millisecond,
			presents:    1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				pe := wantPollError(t, err, "order", acme.StatusProcessing)
				if pe.RetryAfter != 0 || pe.Polls == 0 || pe.Identifier.Value != "" {
					t.Errorf("PollError = %+v, want polls and no Retry-After", pe)
				}
				wantPrefix(t, err, "finalizing order: acme: order "+p.URL+"/my-order/")
				wantContains(t, err, " still processing after ")
			},
		},
		{
			name: "authorization stuck pending",
			ids:  dnsIDs("stuck-authz.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /authZ/", Rewrite: pendingAfter(p)}}
			},
			pollTimeout: 300 * time.Millisecond,
			presents:    1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				pe := wantPollError(t, err, "authorization", acme.StatusPending)
				if pe.Identifier.Value != "stuck-authz.example.com" {
					t.Errorf("PollError.Identifier = %v", pe.Identifier)
				}
				wantPrefix(t, err, "acme: authorization of stuck-authz.example.com still pending after ")
				wantSuffix(t, err, "context deadline exceeded")
			},
		},
		{
			name: "huge Retry-After on finalize",
			ids:  dnsIDs("retry-after.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /finalize-order/", Rewrite: func(h http.Header, b []byte) []byte {
					h.Set("Retry-After", "1000000000")
					return pebbletest.SetStatus(acme.StatusProcessing)(h, b)
				}}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				pe := wantPollError(t, err, "order", acme.StatusProcessing)
				if pe.RetryAfter != 1e9*time.Second || pe.Polls != 0 || time.Until(pe.RetryAt) < 1e9*time.Second-time.Minute {
					t.Errorf("PollError = %+v, want RetryAfter 1e9 s at once, RetryAt ahead by it", pe)
				}
				wantContains(t, err, " still processing after ")
				wantContains(t, err, "(0 polls): the CA asks to retry in 277777h46m40s (at ")
				wantSuffix(t, err, "), past the deadline: context deadline exceeded")
				if n := p.Count("POST /my-order/"); n != 0 {
					t.Errorf("order polled %d times, want 0", n)
				}
			},
		},
		{
			name: "one 429 on newOrder and one 503 on finalize",
			ids:  dnsIDs("transient.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{
					{Kind: "POST /order-plz", Times: 1, Status: http.StatusTooManyRequests, RetryAfter: "1"},
					{Kind: "POST /finalize-order/", Times: 1, Status: http.StatusServiceUnavailable},
				}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				if err != nil {
					t.Fatalf("err = %v, want the certificate", err)
				}
				if n, m := p.Count("POST /order-plz"), p.Count("POST /finalize-order/"); n != 2 || m != 2 {
					t.Errorf("newOrder sent %d times, finalize %d, want 2 each", n, m)
				}
			},
		},
		{
			name: "wrong-name leaf",
			ids:  dnsIDs("wrongname.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /certZ/", Rewrite: pebbletest.ForgeLeaf(t, func(c *x509.Certificate) {
					c.DNSNames = []string{"hostile-wrong.example.net"}
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				wantCertError(t, err, acme.CertificateWrongNames, p,
					"acme: certificate refused: names differ from the request: leaf names [hostile-wrong.example.net] (missing wrongname.example.com; not requested hostile-wrong.example.net)")
			},
		},
		{
			name: "broken chain signature",
			ids:  dnsIDs("brokenchain.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /certZ/", Rewrite: pebbletest.ForgeLeaf(t, func(c *x509.Certificate) {})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				var ce *acme.CertificateError
				if !errors.As(err, &ce) || ce.Reason != acme.CertificateBadChain {
					t.Fatalf("err = %v, want a broken chain", err)
				}
				wantContains(t, err, "acme: certificate refused: broken chain: certificate 0 (SAN brokenchain.example.com) is not signed by certificate 1 (CN=Pebble Intermediate CA ")
				wantSuffix(t, err, "): x509: ECDSA verification failure")
			},
		},
		{
			name: "expired leaf",
			ids:  dnsIDs("expired.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /certZ/", Rewrite: pebbletest.ForgeLeaf(t, func(c *x509.Certificate) {
					c.NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
					c.NotAfter = time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC)
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				var ce *acme.CertificateError
				if !errors.As(err, &ce) || ce.Reason != acme.CertificateExpired {
					t.Fatalf("err = %v, want expired", err)
				}
				wantContains(t, err, "acme: certificate refused: expired: notAfter 2020-04-01T00:00:00Z is not after ")
			},
		},
		{
			name: "CA certificate as leaf",
			ids:  dnsIDs("caleaf.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /certZ/", Rewrite: pebbletest.ForgeLeaf(t, func(c *x509.Certificate) {
					c.BasicConstraintsValid, c.IsCA = true, true
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				wantCertError(t, err, acme.CertificateIsCA, p, "acme: certificate refused: leaf is a CA certificate: SAN caleaf.example.com has basicConstraints CA:TRUE")
			},
		},
		{
			name: "changed order identifiers",
			ids:  dnsIDs("asked.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /order-plz", Rewrite: pebbletest.EditJSON(func(m map[string]any) {
					m["identifiers"] = []acme.Identifier{acme.DNS("asked.example.com"), acme.DNS("hostile-extra.example.net")}
				})}}
			},
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				if !errors.Is(err, acme.ErrIdentifierMismatch) {
					t.Fatalf("err = %v, want ErrIdentifierMismatch", err)
				}
				wantPrefix(t, err, "creating order "+p.URL+"/my-order/")
				wantSuffix(t, err, ": acme: identifiers differ from the request: the order's identifiers are [asked.example.com hostile-extra.example.net] (not requested hostile-extra.example.net)")
			},
		},
		{
			name: "authorization for a foreign name",
			ids:  dnsIDs("own.example.com"),
			faults: func(t *testing.T, p *pebbletest.FaultProxy) []pebbletest.Fault {
				return []pebbletest.Fault{{Kind: "POST /authZ/", Times: 1, Rewrite: pebbletest.EditJSON(func(m map[string]any) {
					m["identifier"] = acme.DNS("hostile-other.example.net")
				})}}
			},
			check: func(t *testing.T, err error, p *pebbletest.FaultProxy) {
				if !errors.Is(err, acme.ErrIdentifierMismatch) {
					t.Fatalf("err = %v, want ErrIdentifierMismatch", err)
				}
				wantPrefix(t, err, "authorization "+p.URL+"/authZ/")
				wantSuffix(t, err, " is for hostile-other.example.net, which the order did not request: acme: identifiers differ from the request")
				if n := p.Count("POST /chalZ/"); n != 0 {
					t.Errorf("challenge answered %d times, want 0", n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pebbletest.NewFaultProxy(t, s)
			for _, f := range tt.faults(t, p) {
				p.Add(f)
			}
			c := proxyClient(p)
			c.PollTimeout = tt.pollTimeout
			acct := newAccount(t, c)
			sol := &dnsSolver{s: s}
			_, err := c.ObtainCertificate(testCtx(t), acct, acme.CertificateRequest{Identifiers: tt.ids, Key: newKey(t), Solver: sol, Roots: s.Roots(t, 0)})
			tt.check(t, err, p)
			presents, cleanups := sol.calls()
			if len(presents) != tt.presents || len(cleanups) != len(presents) {
				t.Errorf("presented %v, cleaned up %v, want %d each", presents, cleanups, tt.presents)
			}
		})
	}
}

// pendingAfter rewrites authorizations to pending once the challenge has
// been answered.
func pendingAfter(p *pebbletest.FaultProxy) func(http.Header, []byte) []byte {
	return func(h http.Header, b []byte) []byte {
		if p.Count("POST /chalZ/") == 0 {
			return b
		}
		return pebbletest.SetStatus(acme.StatusPending)(h, b)
	}
}

func wantPollError(t *testing.T, err error, kind, status string) *acme.PollError {
	t.Helper()
	var pe *acme.PollError
	if !errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a *PollError for the deadline", err)
	}
	if pe.Kind != kind || pe.Status != status {
		t.Errorf("PollError kind %q status %q, want %q %q", pe.Kind, pe.Status, kind, status)
	}
	return pe
}

func wantCertError(t *testing.T, err error, reason acme.CertificateReason, p *pebbletest.FaultProxy, msg string) {
	t.Helper()
	if !errors.Is(err, reason) {
		t.Fatalf("err = %v, want %q", err, reason)
	}
	wantPrefix(t, err, "verifying certificate "+p.URL+"/certZ/")
	wantSuffix(t, err, ": "+msg)
}

func wantPrefix(t *testing.T, err error, prefix string) {
	t.Helper()
	if err == nil || !strings.HasPrefix(err.Error(), prefix) {
		t.Errorf("err = %v, want it to start %q", err, prefix)
	}
}

func wantSuffix(t *testing.T, err error, suffix string) {
	t.Helper()
	if err == nil || !strings.HasSuffix(err.Error(), suffix) {
		t.Errorf("err = %v, want it to end %q", err, suffix)
	}
}

func wantContains(t *testing.T, err error, part string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), part) {
		t.Errorf("err = %v, want it to contain %q", err, part)
	}
}
