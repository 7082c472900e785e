package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/acme/standalone"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// vtoken returns a distinct valid token for a test case.
func vtoken(name string) string {
	return strings.NewReplacer(" ", "-", "/", "-", ".", "-").Replace(fmt.Sprintf("%-30s", name) + "aaaaaaaaaaaaaaaaaaaaaa")[:30]
}

// wantReason fails unless err is a *VerifyError with reason want (nil: err nil).
func wantReason(t *testing.T, err error, want acme.VerifyReason) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("check failed: %v, want success", err)
		}
		return
	}
	var ve *acme.VerifyError
	if !errors.As(err, &ve) || ve.Reason != want || !errors.Is(err, want) {
		t.Fatalf("check error = %v, want reason %q", err, want)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := portOf(t, ln.Addr().String())
	ln.Close()
	return p
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return portOf(t, ln.Addr().String())
}

// setTXT serves a TXT record in the test DNS server (shared by every
// Pebble of the process) until the test ends.
func setTXT(t *testing.T, name, value string) {
	pebble.DNS.AddDNSTXTRecord(name, value)
	t.Cleanup(func() { pebble.DNS.DeleteDNSTXTRecord(name) })
}

// TestVerifier runs every self-check against real local servers, with the
// package's Pebble DNS server for names (it answers 127.0.0.1 for every
// name).
func TestVerifier(t *testing.T) {
	t.Run("HTTP01", func(t *testing.T) { testVerifyHTTP01(t, pebble) })
	t.Run("HTTP01Standalone", func(t *testing.T) { testVerifyHTTP01Standalone(t, pebble) })
	t.Run("DNS01", func(t *testing.T) { testVerifyDNS01(t, pebble) })
	t.Run("TLSALPN01", func(t *testing.T) { testVerifyTLSALPN01(t, pebble) })
}

func testVerifyHTTP01(t *testing.T, pebble *pebbletest.Server) {
	const ka = "the-key-authorization"
	handlers := map[string]http.HandlerFunc{}
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.URL.Path, acme.HTTP01PathPrefix)
		if h, ok := handlers[tok]; ok {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	port := portOf(t, srv.Listener.Addr().String())
	tlsPort := portOf(t, tlsSrv.Listener.Addr().String())
	path := func(tok string) string { return acme.HTTP01PathPrefix + tok }
	body := func(s string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, s) }
	}
	redirect := func(to string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) }
	}

	tests := []struct {
		name    string
		handler http.HandlerFunc
		id      acme.Identifier
		timeout time.Duration
		port    int
		want    acme.VerifyReason
	}{
		{name: "ok", handler: body(ka)},
		{name: "ok trailing whitespace", handler: body(ka + " \r\n\t\n")},
		{name: "ok dns name through resolver", handler: body(ka), id: acme.DNS("www.self-check.example")},
		{name: "wrong body", handler: body("something else"), want: acme.VerifyWrongBody},
		{name: "leading whitespace", handler: body(" " + ka), want: acme.VerifyWrongBody},
		{name: "not found", handler: http.NotFound, want: acme.VerifyHTTPStatus},
		{name: "server error", handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, ka, 500) }, want: acme.VerifyHTTPStatus},
		{name: "too large", handler: body(ka + strings.Repeat(" ", acme.MaxHTTP01Body)), want: acme.VerifyBodyTooLarge},
		{name: "redirect same server", handler: redirect(path(vtoken("ok")))},
		{name: "redirect to https ignores certificate", handler: redirect(tlsSrv.URL + path(vtoken("ok")))},
		{name: "redirect to ftp", handler: redirect("ftp://127.0.0.1/" + vtoken("ok")), want: acme.VerifyBadRedirect},
		{name: "redirect to other port", handler: redirect("http://127.0.0.1:" + strconv.Itoa(closedPort(t)) + path(vtoken("ok"))), want: acme.VerifyBadRedirect},
		{name: "redirect loop", handler: redirect(path(vtoken("redirect loop"))), want: acme.VerifyTooManyRedirects},
		{name: "slow", timeout: 200 * time.Millisecond, handler: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, want: acme.VerifyTimeout},
		{name: "nothing listening", handler: body(ka), port: closedPort(t), want: acme.VerifyUnreachable},
		{name: "silent server", timeout: 200 * time.Millisecond, handler: body(ka), port: silentListener(t), want: acme.VerifyTimeout},
	}
	for _, tt := range tests {
		if handlers[vtoken(tt.name)] != nil {
			t.Fatalf("two cases share token %s", vtoken(tt.name))
		}
		handlers[vtoken(tt.name)] = tt.handler
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, HTTPPort: port, TLSPort: tlsPort, Timeout: tt.timeout}
			if tt.port != 0 {
				v.HTTPPort = tt.port
			}
			id := tt.id
			if id.Type == "" {
				id = acme.ParseIdentifier("127.0.0.1")
			}
			start := time.Now()
			wantReason(t, v.HTTP01(context.Background(), id, vtoken(tt.name), ka), tt.want)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("check took %v", d)
			}
		})
	}

	t.Run("invalid token", func(t *testing.T) {
		v := &acme.Verifier{HTTPPort: port}
		err := v.HTTP01(context.Background(), acme.ParseIdentifier("127.0.0.1"), "../../../etc/passwd", ka)
		wantReason(t, err, acme.VerifyInvalidToken)
		if !errors.Is(err, acme.ErrInvalidToken) {
			t.Errorf("error %v is not ErrInvalidToken", err)
		}
	})
}

// testVerifyHTTP01Standalone checks the standalone server end to end, over
// IPv4 and, where the host has it, IPv6.
func testVerifyHTTP01Standalone(t *testing.T, pebble *pebbletest.Server) {
	srv := &standalone.HTTP01Server{ListenAddrs: []string{"127.0.0.1:0"}}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		srv.ListenAddrs = []string{":0"}
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	tok := vtoken("standalone")
	ka := tok + ".thumbprint"
	if err := srv.Add(tok, ka); err != nil {
		t.Fatal(err)
	}
	v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, HTTPPort: portOf(t, srv.Addrs()[0].String())}
	ids := []acme.Identifier{acme.DNS("standalone.example"), acme.ParseIdentifier("127.0.0.1")}
	if srv.ListenAddrs[0] == ":0" {
		ids = append(ids, acme.ParseIdentifier("::1"))
	}
	for _, id := range ids {
		wantReason(t, v.HTTP01(context.Background(), id, tok, ka), "")
		wantReason(t, v.HTTP01(context.Background(), id, tok, tok+".other"), acme.VerifyWrongBody)
	}
	srv.Remove(tok)
	wantReason(t, v.HTTP01(context.Background(), ids[0], tok, ka), acme.VerifyHTTPStatus)
}

// servfailResolver answers every DNS query with SERVFAIL.
func servfailResolver(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			// Header: set QR, keep the opcode and RD, RCODE 2 (SERVFAIL).
			buf[2] |= 0x80
			buf[3] = buf[3]&0xf0 | 2
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// silentResolver receives DNS queries and never answers.
func silentResolver(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func testVerifyDNS01(t *testing.T, pebble *pebbletest.Server) {
	const ka = "tok.thumb"
	setTXT(t, "_acme-challenge.ok.example.", acme.DNS01TXTRecord(ka))
	setTXT(t, "_acme-challenge.wrong.example.", acme.DNS01TXTRecord("other"))
	setTXT(t, "_acme-challenge.several.example.", acme.DNS01TXTRecord("other"))
	setTXT(t, "_acme-challenge.several.example.", acme.DNS01TXTRecord(ka))
	dnsAddr := pebble.DNSAddr

	tests := []struct {
		name      string
		domain    string
		resolvers []string
		want      acme.VerifyReason
	}{
		{name: "ok", domain: "ok.example"},
		{name: "ok wildcard", domain: "*.ok.example"},
		{name: "ok trailing dot", domain: "ok.example."},
		{name: "ok among several", domain: "several.example"},
		{name: "ok at two resolvers", domain: "ok.example", resolvers: []string{dnsAddr, dnsAddr}},
		{name: "wrong value", domain: "wrong.example", want: acme.VerifyWrongRecord},
		{name: "missing", domain: "missing.example", want: acme.VerifyNoRecord},
		{name: "servfail", domain: "ok.example", resolvers: []string{servfailResolver(t)}, want: acme.VerifyDNSFailure},
		{name: "second resolver fails", domain: "ok.example", resolvers: []string{dnsAddr, servfailResolver(t)}, want: acme.VerifyDNSFailure},
		{name: "resolver silent", domain: "ok.example", resolvers: []string{silentResolver(t)}, want: acme.VerifyTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := tt.resolvers
			if rs == nil {
				rs = []string{dnsAddr}
			}
			v := &acme.Verifier{Resolvers: rs, Timeout: 300 * time.Millisecond}
			err := v.DNS01(context.Background(), tt.domain, ka)
			wantReason(t, err, tt.want)
			if tt.want == acme.VerifyDNSFailure && !strings.Contains(err.Error(), rs[len(rs)-1]) {
				t.Errorf("error %v does not name the failing resolver %s", err, rs[len(rs)-1])
			}
			// The Go resolver names the resolv.conf server it meant to ask;
			// the error must name the one that was asked.
			if de := (*net.DNSError)(nil); errors.As(err, &de) && de.Server != rs[len(rs)-1] {
				t.Errorf("DNS error %v names server %q, want the configured %s", err, de.Server, rs[len(rs)-1])
			}
		})
	}
}

// alpnCert builds a self-signed certificate with the given names and
// acmeIdentifier extension (nil: none).
func alpnCert(t *testing.T, dns []string, ips []net.IP, ext *pkix.Extension) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	if ext != nil {
		tmpl.ExtraExtensions = []pkix.Extension{*ext}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func acmeExt(t *testing.T, keyAuth string, critical bool) *pkix.Extension {
	sum := sha256.Sum256([]byte(keyAuth))
	v, err := asn1.Marshal(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return &pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}, Critical: critical, Value: v}
}

func testVerifyTLSALPN01(t *testing.T, pebble *pebbletest.Server) {
	const ka = "tok.thumb"
	srv := &standalone.TLSALPN01Server{ListenAddrs: []string{"127.0.0.1:0"}}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		srv.ListenAddrs = []string{":0"}
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	port := portOf(t, srv.Addrs()[0].String())

	// A TLS server that does not speak acme-tls/1.
	plain, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{alpnCert(t, []string{"plain.example"}, nil, acmeExt(t, ka, true))}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()

	malformed := acmeExt(t, ka, true)
	malformed.Value = []byte{0x04, 0x03, 1, 2, 3}

	serve := func(id acme.Identifier, cert tls.Certificate) {
		t.Helper()
		if err := srv.AddCertificate(id, cert); err != nil {
			t.Fatal(err)
		}
	}
	add := func(id acme.Identifier, keyAuth string) {
		t.Helper()
		if err := srv.Add(id, keyAuth); err != nil {
			t.Fatal(err)
		}
	}
	add(acme.DNS("good.example"), ka)
	add(acme.ParseIdentifier("127.0.0.1"), ka)
	add(acme.ParseIdentifier("::1"), ka)
	add(acme.DNS("digest.example"), "another key authorization")
	serve(acme.DNS("noext.example"), alpnCert(t, []string{"noext.example"}, nil, nil))
	serve(acme.DNS("notcritical.example"), alpnCert(t, []string{"notcritical.example"}, nil, acmeExt(t, ka, false)))
	serve(acme.DNS("malformed.example"), alpnCert(t, []string{"malformed.example"}, nil, malformed))
	serve(acme.DNS("othername.example"), alpnCert(t, []string{"different.example"}, nil, acmeExt(t, ka, true)))
	serve(acme.DNS("twosans.example"), alpnCert(t, []string{"twosans.example", "more.example"}, nil, acmeExt(t, ka, true)))
	serve(acme.DNS("dnsandip.example"), alpnCert(t, []string{"dnsandip.example"}, []net.IP{net.ParseIP("127.0.0.1")}, acmeExt(t, ka, true)))
	serve(acme.ParseIdentifier("127.0.0.2"), alpnCert(t, []string{"127.0.0.2"}, nil, acmeExt(t, ka, true)))

	tests := []struct {
		name    string
		id      acme.Identifier
		port    int
		timeout time.Duration
		want    acme.VerifyReason
	}{
		{name: "ok dns", id: acme.DNS("good.example")},
		{name: "ok ip", id: acme.ParseIdentifier("127.0.0.1")},
		{name: "wrong digest", id: acme.DNS("digest.example"), want: acme.VerifyWrongDigest},
		{name: "no extension", id: acme.DNS("noext.example"), want: acme.VerifyNoExtension},
		{name: "not critical", id: acme.DNS("notcritical.example"), want: acme.VerifyNotCritical},
		{name: "malformed extension", id: acme.DNS("malformed.example"), want: acme.VerifyMalformedExtension},
		{name: "other name", id: acme.DNS("othername.example"), want: acme.VerifyWrongSAN},
		{name: "two SANs", id: acme.DNS("twosans.example"), want: acme.VerifyWrongSAN},
		{name: "dns and ip SANs", id: acme.DNS("dnsandip.example"), want: acme.VerifyWrongSAN},
		{name: "ip as dNSName", id: acme.Identifier{Type: acme.IdentifierIP, Value: "127.0.0.2"}, want: acme.VerifyWrongSAN},
		{name: "no challenge for name", id: acme.DNS("unknown.example"), want: acme.VerifyHandshake},
		{name: "no ALPN", id: acme.DNS("plain.example"), port: portOf(t, plain.Addr().String()), want: acme.VerifyNoALPN},
		{name: "nothing listening", id: acme.DNS("good.example"), port: closedPort(t), want: acme.VerifyUnreachable},
		{name: "silent server", id: acme.DNS("good.example"), port: silentListener(t), timeout: 200 * time.Millisecond, want: acme.VerifyTimeout},
	}
	if srv.ListenAddrs[0] == ":0" {
		tests = append(tests, struct {
			name    string
			id      acme.Identifier
			port    int
			timeout time.Duration
			want    acme.VerifyReason
		}{name: "ok ipv6", id: acme.ParseIdentifier("::1")})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, TLSPort: port, Timeout: tt.timeout}
			if tt.port != 0 {
				v.TLSPort = tt.port
			}
			wantReason(t, v.TLSALPN01(context.Background(), tt.id, ka), tt.want)
		})
	}

	t.Run("probe then verify", func(t *testing.T) {
		v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, TLSPort: port}
		cert, err := v.ProbeTLSALPN01(context.Background(), acme.DNS("good.example"))
		if err != nil {
			t.Fatal(err)
		}
		wantReason(t, acme.VerifyTLSALPN01Cert(cert, acme.DNS("good.example"), ka), "")
		wantReason(t, acme.VerifyTLSALPN01Cert(cert, acme.DNS("good.example"), "other"), acme.VerifyWrongDigest)
		wantReason(t, acme.VerifyTLSALPN01Cert(cert, acme.DNS("bad.example"), ka), acme.VerifyWrongSAN)
	})
}

func TestVerifyKeyAuthorization(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := vtoken("key authorization")
	ka, err := acme.KeyAuthorization(tok, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	otherKA, err := acme.KeyAuthorization(tok, other.Public())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, keyAuth, token string
		want                 acme.VerifyReason
	}{
		{"ok", ka, tok, ""},
		{"other key", otherKA, tok, acme.VerifyWrongThumbprint},
		{"other token", ka, vtoken("another token"), acme.VerifyWrongToken},
		{"no dot", tok, tok, acme.VerifyWrongToken},
		{"extra part", ka + ".x", tok, acme.VerifyWrongThumbprint},
		{"invalid token", "../x.y", "../x", acme.VerifyInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantReason(t, acme.VerifyKeyAuthorization(tt.keyAuth, tt.token, key.Public()), tt.want)
		})
	}
}

// TestVerifierCanceled checks that a check cancelled by its caller is not
// reported as a failure of the challenge.
func TestVerifierCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := &acme.Verifier{Resolvers: []string{silentResolver(t)}, HTTPPort: silentListener(t), TLSPort: silentListener(t)}
	id := acme.ParseIdentifier("127.0.0.1")
	for name, err := range map[string]error{
		"http-01":     v.HTTP01(ctx, id, vtoken("canceled"), "ka"),
		"dns-01":      v.DNS01(ctx, "canceled.example", "ka"),
		"tls-alpn-01": v.TLSALPN01(ctx, id, "ka"),
	} {
		var ve *acme.VerifyError
		if !errors.Is(err, context.Canceled) || errors.As(err, &ve) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled and no VerifyError", name, err)
		}
	}
}

// TestVerifierNamesResolver: a name that does not resolve for http-01 or
// tls-alpn-01 is reported at the configured resolver, not the system's.
func TestVerifierNamesResolver(t *testing.T) {
	bad := servfailResolver(t)
	v := &acme.Verifier{Resolvers: []string{bad}, Timeout: 300 * time.Millisecond, HTTPPort: closedPort(t), TLSPort: closedPort(t)}
	id := acme.DNS("resolver-name.example")
	for name, err := range map[string]error{
		"http-01":     v.HTTP01(context.Background(), id, vtoken("rn"), vtoken("rn")+".x"),
		"tls-alpn-01": v.TLSALPN01(context.Background(), id, "tok.thumb"),
	} {
		var de *net.DNSError
		if !errors.As(err, &de) || de.Server != bad || !strings.Contains(err.Error(), "on "+bad+": ") {
			t.Errorf("%s: err = %v, want a DNS error naming %s", name, err, bad)
		}
	}
}
