package acme_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// faultProxy is a reverse proxy in front of a real Pebble that misbehaves
// on purpose, for the faults a real CA does not produce. It keeps the
// client's Host header, so Pebble builds every URL (and checks every JWS
// url) with the proxy's address and the whole conversation goes through
// it.
type faultProxy struct {
	srv *httptest.Server

	mu     sync.Mutex
	faults []*fault
	counts map[string]int // "METHOD /kind/" as testpebble counts
}

// fault changes the answers to requests of one kind ("POST /order-plz").
type fault struct {
	kind string
	// times is how many requests it applies to; 0 means all.
	times int
	// refuse answers with this status and a problem, without forwarding.
	refuse     int
	retryAfter string
	// rewrite edits the upstream answer's body and headers.
	rewrite func(h http.Header, body []byte) []byte

	applied int
}

func newFaultProxy(t *testing.T, s *pebbletest.Server) *faultProxy {
	t.Helper()
	target, err := url.Parse(s.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{counts: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = target.Scheme, target.Host
			r.Out.Host = r.In.Host // Pebble builds URLs from it
		},
		Transport: s.HTTPClient().Transport,
		ModifyResponse: func(resp *http.Response) error {
			f, _ := resp.Request.Context().Value(faultKey{}).(*fault)
			if f == nil || f.rewrite == nil {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			body = f.rewrite(resp.Header, body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
	}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.Method + " " + pathKind(r.URL.Path)
		p.mu.Lock()
		p.counts[kind]++
		var f *fault
		for _, c := range p.faults {
			if c.kind == kind && (c.times == 0 || c.applied < c.times) {
				c.applied++
				f = c
				break
			}
		}
		p.mu.Unlock()
		if f != nil && f.refuse != 0 {
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(f.refuse)
			typ := acme.ProblemServerInternal
			if f.refuse == http.StatusTooManyRequests {
				typ = acme.ProblemRateLimited
			}
			fmt.Fprintf(w, `{"type":%q,"detail":"injected","status":%d}`, typ, f.refuse)
			return
		}
		if f != nil {
			r = r.WithContext(context.WithValue(r.Context(), faultKey{}, f))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

type faultKey struct{}

// client returns a client of the CA behind the proxy, which trusts both.
func (p *faultProxy) client() *acme.Client {
	return &acme.Client{
		DirectoryURL: p.srv.URL + "/dir",
		HTTPClient:   p.srv.Client(),
		PollInterval: 20 * time.Millisecond,
	}
}

func (p *faultProxy) count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

// pathKind is testpebble's reduction of a path to its resource kind.
func pathKind(path string) string {
	if i := strings.Index(path[1:], "/"); i >= 0 {
		return path[:i+2]
	}
	return path
}

// editJSON applies edit to a JSON object body.
func editJSON(edit func(m map[string]any)) func(http.Header, []byte) []byte {
	return func(h http.Header, body []byte) []byte {
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			return body
		}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
}

func setStatus(status string) func(http.Header, []byte) []byte {
	return editJSON(func(m map[string]any) { m["status"] = status })
}

// forgeLeaf replaces the leaf of a served chain with one for the same key
// made by edit from the real leaf, signed by a key of the proxy's own
// under the real issuer's name, and keeps the rest of the chain.
func forgeLeaf(t *testing.T, edit func(tmpl *x509.Certificate)) func(http.Header, []byte) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return func(h http.Header, body []byte) []byte {
		chain, err := acme.ParseChainPEM(body)
		if err != nil {
			t.Errorf("forgeLeaf: %v", err)
			return body
		}
		real := chain[0]
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(4242),
			Subject:      real.Subject,
			DNSNames:     real.DNSNames,
			IPAddresses:  real.IPAddresses,
			NotBefore:    real.NotBefore,
			NotAfter:     real.NotAfter,
			KeyUsage:     real.KeyUsage,
			ExtKeyUsage:  real.ExtKeyUsage,
		}
		edit(tmpl)
		parent := &x509.Certificate{Subject: chain[1].Subject, SubjectKeyId: chain[1].SubjectKeyId}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, real.PublicKey, key)
		if err != nil {
			t.Errorf("forgeLeaf: %v", err)
			return body
		}
		var out bytes.Buffer
		pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		for _, c := range chain[1:] {
			pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		return out.Bytes()
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
		faults func(t *testing.T, p *faultProxy) []*fault
		// pollTimeout shortens the client's waits.
		pollTimeout time.Duration
		// check asserts the error; presents is how many Present calls the
		// solver should see.
		check    func(t *testing.T, err error, p *faultProxy)
		presents int
	}{
		{
			name: "order stuck processing",
			ids:  dnsIDs("stuck-order.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{
					{kind: "POST /finalize-order/", rewrite: setStatus(acme.StatusProcessing)},
					{kind: "POST /my-order/", rewrite: setStatus(acme.StatusProcessing)},
				}
			},
			pollTimeout: 300 * time.Millisecond,
			presents:    1,
			check: func(t *testing.T, err error, p *faultProxy) {
				pe := wantPollError(t, err, "order", acme.StatusProcessing)
				if pe.RetryAfter != 0 || pe.Polls == 0 || pe.Identifier.Value != "" {
					t.Errorf("PollError = %+v, want polls and no Retry-After", pe)
				}
				wantPrefix(t, err, "finalizing order: acme: order "+p.srv.URL+"/my-order/")
				wantContains(t, err, " still processing after ")
			},
		},
		{
			name: "authorization stuck pending",
			ids:  dnsIDs("stuck-authz.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /authZ/", rewrite: pendingAfter(p)}}
			},
			pollTimeout: 300 * time.Millisecond,
			presents:    1,
			check: func(t *testing.T, err error, p *faultProxy) {
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
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /finalize-order/", rewrite: func(h http.Header, b []byte) []byte {
					h.Set("Retry-After", "1000000000")
					return setStatus(acme.StatusProcessing)(h, b)
				}}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
				pe := wantPollError(t, err, "order", acme.StatusProcessing)
				if pe.RetryAfter != 1e9*time.Second || pe.Polls != 0 || time.Until(pe.RetryAt) < 1e9*time.Second-time.Minute {
					t.Errorf("PollError = %+v, want RetryAfter 1e9 s at once, RetryAt ahead by it", pe)
				}
				wantContains(t, err, " still processing after ")
				wantContains(t, err, "(0 polls): the CA asks to retry in 277777h46m40s (at ")
				wantSuffix(t, err, "), past the deadline: context deadline exceeded")
				if n := p.count("POST /my-order/"); n != 0 {
					t.Errorf("order polled %d times, want 0", n)
				}
			},
		},
		{
			name: "one 429 on newOrder and one 503 on finalize",
			ids:  dnsIDs("transient.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{
					{kind: "POST /order-plz", times: 1, refuse: http.StatusTooManyRequests, retryAfter: "1"},
					{kind: "POST /finalize-order/", times: 1, refuse: http.StatusServiceUnavailable},
				}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
				if err != nil {
					t.Fatalf("err = %v, want the certificate", err)
				}
				if n, m := p.count("POST /order-plz"), p.count("POST /finalize-order/"); n != 2 || m != 2 {
					t.Errorf("newOrder sent %d times, finalize %d, want 2 each", n, m)
				}
			},
		},
		{
			name: "wrong-name leaf",
			ids:  dnsIDs("wrongname.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /certZ/", rewrite: forgeLeaf(t, func(c *x509.Certificate) {
					c.DNSNames = []string{"hostile-wrong.example.net"}
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
				wantCertError(t, err, acme.CertificateWrongNames, p,
					"acme: certificate refused: names differ from the request: leaf names [hostile-wrong.example.net] (missing wrongname.example.com; not requested hostile-wrong.example.net)")
			},
		},
		{
			name: "broken chain signature",
			ids:  dnsIDs("brokenchain.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /certZ/", rewrite: forgeLeaf(t, func(c *x509.Certificate) {})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
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
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /certZ/", rewrite: forgeLeaf(t, func(c *x509.Certificate) {
					c.NotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
					c.NotAfter = time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC)
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
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
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /certZ/", rewrite: forgeLeaf(t, func(c *x509.Certificate) {
					c.BasicConstraintsValid, c.IsCA = true, true
				})}}
			},
			presents: 1,
			check: func(t *testing.T, err error, p *faultProxy) {
				wantCertError(t, err, acme.CertificateIsCA, p, "acme: certificate refused: leaf is a CA certificate: SAN caleaf.example.com has basicConstraints CA:TRUE")
			},
		},
		{
			name: "changed order identifiers",
			ids:  dnsIDs("asked.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /order-plz", rewrite: editJSON(func(m map[string]any) {
					m["identifiers"] = []acme.Identifier{acme.DNS("asked.example.com"), acme.DNS("hostile-extra.example.net")}
				})}}
			},
			check: func(t *testing.T, err error, p *faultProxy) {
				if !errors.Is(err, acme.ErrIdentifierMismatch) {
					t.Fatalf("err = %v, want ErrIdentifierMismatch", err)
				}
				wantPrefix(t, err, "creating order "+p.srv.URL+"/my-order/")
				wantSuffix(t, err, ": acme: identifiers differ from the request: the order's identifiers are [asked.example.com hostile-extra.example.net] (not requested hostile-extra.example.net)")
			},
		},
		{
			name: "authorization for a foreign name",
			ids:  dnsIDs("own.example.com"),
			faults: func(t *testing.T, p *faultProxy) []*fault {
				return []*fault{{kind: "POST /authZ/", times: 1, rewrite: editJSON(func(m map[string]any) {
					m["identifier"] = acme.DNS("hostile-other.example.net")
				})}}
			},
			check: func(t *testing.T, err error, p *faultProxy) {
				if !errors.Is(err, acme.ErrIdentifierMismatch) {
					t.Fatalf("err = %v, want ErrIdentifierMismatch", err)
				}
				wantPrefix(t, err, "authorization "+p.srv.URL+"/authZ/")
				wantSuffix(t, err, " is for hostile-other.example.net, which the order did not request: acme: identifiers differ from the request")
				if n := p.count("POST /chalZ/"); n != 0 {
					t.Errorf("challenge answered %d times, want 0", n)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFaultProxy(t, s)
			p.faults = tt.faults(t, p)
			c := p.client()
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
func pendingAfter(p *faultProxy) func(http.Header, []byte) []byte {
	return func(h http.Header, b []byte) []byte {
		if p.count("POST /chalZ/") == 0 {
			return b
		}
		return setStatus(acme.StatusPending)(h, b)
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

func wantCertError(t *testing.T, err error, reason acme.CertificateReason, p *faultProxy, msg string) {
	t.Helper()
	if !errors.Is(err, reason) {
		t.Fatalf("err = %v, want %q", err, reason)
	}
	wantPrefix(t, err, "verifying certificate "+p.srv.URL+"/certZ/")
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
