package pebbletest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// FaultProxy is a reverse proxy in front of a Server that misbehaves on
// purpose, for the faults a real CA does not produce: a stuck order, a huge
// Retry-After, a transient 429 or 503, a forged leaf, a changed directory.
// Everything else is forwarded to Pebble unchanged. The proxy keeps the
// client's Host header, so Pebble builds every URL (and checks every JWS
// url) with the proxy's address and the whole conversation goes through it.
//
// Requests are matched by kind, "METHOD /kind/" as the Server's Counter
// counts them: "POST /order-plz", "POST /finalize-order/", "POST /my-order/",
// "POST /authZ/", "POST /chalZ/", "POST /certZ/", "GET /dir",
// "POST /rollover-account-key", "POST /sign-me-up".
//
//	p := pebbletest.NewFaultProxy(t, srv)
//	p.Add(pebbletest.Fault{Kind: "POST /order-plz", Times: 1, Status: 429, RetryAfter: "1"})
//	c := &acme.Client{DirectoryURL: p.DirectoryURL, HTTPClient: p.HTTPClient()}
type FaultProxy struct {
	// DirectoryURL is the upstream directory's URL through the proxy.
	DirectoryURL string
	// URL is the proxy's base URL (https on 127.0.0.1).
	URL string
	// CAFile holds the PEM of the certificate the proxy serves, which a
	// client must trust (the proxy's own, not Pebble's).
	CAFile string

	srv    *httptest.Server
	mu     sync.Mutex
	faults []*Fault
	counts map[string]int
}

// Fault changes the answers to requests of one kind. With Status set, the
// proxy answers with that status and an RFC 8555 problem document itself,
// without forwarding; otherwise it forwards and Rewrite (if set) edits the
// answer.
type Fault struct {
	// Kind is the requests' "METHOD /kind/".
	Kind string
	// Times is how many requests the fault applies to; 0 means all.
	Times int

	// Status, if not 0, refuses the request with this HTTP status.
	Status int
	// Type is the refusal's problem type; empty means
	// urn:ietf:params:acme:error:rateLimited for 429, unauthorized for 403
	// and serverInternal otherwise.
	Type string
	// Detail and Instance are the refusal's problem detail ("injected" if
	// empty) and instance (RFC 8555 §7.3.3, userActionRequired).
	Detail, Instance string
	// RetryAfter is the refusal's Retry-After header, if not empty.
	RetryAfter string
	// Header is added to the refusal (e.g. a Link to new terms of service).
	Header http.Header

	// Rewrite edits a forwarded answer: its headers in place, its body
	// returned. See EditJSON, SetStatus and ForgeLeaf.
	Rewrite func(h http.Header, body []byte) []byte

	applied int
}

// NewFaultProxy starts a proxy in front of s and stops it at the test's
// cleanup. It has no faults until Add.
func NewFaultProxy(t testing.TB, s *Server) *FaultProxy {
	t.Helper()
	target, err := url.Parse(s.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{counts: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = target.Scheme, target.Host
			r.Out.Host = r.In.Host // Pebble builds URLs from it
		},
		Transport: s.HTTPClient().Transport,
		ModifyResponse: func(resp *http.Response) error {
			f, _ := resp.Request.Context().Value(faultKey{}).(*Fault)
			if f == nil || f.Rewrite == nil {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			body = f.Rewrite(resp.Header, body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			resp.ContentLength = int64(len(body))
			resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
			return nil
		},
	}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.Method + " " + pathKind(r.URL.Path)
		f := p.match(kind)
		if f != nil && f.Status != 0 {
			f.refuse(w)
			return
		}
		if f != nil {
			r = r.WithContext(context.WithValue(r.Context(), faultKey{}, f))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	p.DirectoryURL = p.srv.URL + target.Path
	p.CAFile = filepath.Join(t.TempDir(), "fault-proxy-ca.pem")
	if err := os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type faultKey struct{}

// Add adds a fault. A request takes the first added fault of its kind that
// has not been applied Times times yet. Add is safe while requests run.
func (p *FaultProxy) Add(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// match counts a request of kind and returns the fault it takes, if any.
func (p *FaultProxy) match(kind string) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[kind]++
	for _, f := range p.faults {
		if f.Kind == kind && (f.Times == 0 || f.applied < f.Times) {
			f.applied++
			return f
		}
	}
	return nil
}

func (f *Fault) refuse(w http.ResponseWriter) {
	typ, detail := f.Type, f.Detail
	if typ == "" {
		switch f.Status {
		case http.StatusTooManyRequests:
			typ = "urn:ietf:params:acme:error:rateLimited"
		case http.StatusForbidden:
			typ = "urn:ietf:params:acme:error:unauthorized"
		default:
			typ = "urn:ietf:params:acme:error:serverInternal"
		}
	}
	if detail == "" {
		detail = "injected"
	}
	for k, vs := range f.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	problem := map[string]any{"type": typ, "detail": detail, "status": f.Status}
	if f.Instance != "" {
		problem["instance"] = f.Instance
	}
	body, _ := json.Marshal(problem)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(f.Status)
	w.Write(body)
}

// Count returns how many requests of kind ("POST /my-order/") reached the
// proxy, faulted or not.
func (p *FaultProxy) Count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

// HTTPClient returns a client that trusts the proxy's certificate.
func (p *FaultProxy) HTTPClient() *http.Client { return p.srv.Client() }

// EditJSON returns a Rewrite that applies edit to a JSON object body (a body
// that is not one is left as it is).
func EditJSON(edit func(m map[string]any)) func(http.Header, []byte) []byte {
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

// SetStatus returns a Rewrite that sets a JSON object's "status" (an order's
// or an authorization's).
func SetStatus(status string) func(http.Header, []byte) []byte {
	return EditJSON(func(m map[string]any) { m["status"] = status })
}

// ForgeLeaf returns a Rewrite for "POST /certZ/" that replaces the served
// chain's leaf with one for the same public key, made by edit from a copy
// of the real leaf's subject, names, validity and key usages, and signed
// by a throwaway key under the real issuer's name; the rest of the chain is
// kept. Its signature therefore never verifies: an otherwise unchanged
// forged leaf is a broken chain.
func ForgeLeaf(t testing.TB, edit func(tmpl *x509.Certificate)) func(http.Header, []byte) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return func(h http.Header, body []byte) []byte {
		var chain []*x509.Certificate
		for rest := body; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Errorf("ForgeLeaf: %v", err)
				return body
			}
			chain = append(chain, c)
		}
		if len(chain) < 2 {
			t.Errorf("ForgeLeaf: %d certificates served, want a leaf and its issuer", len(chain))
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
			t.Errorf("ForgeLeaf: %v", err)
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
