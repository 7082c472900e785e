package standalone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// token returns a distinct valid challenge token for i.
func token(i int) string { return fmt.Sprintf("tok%040d", i) }

func keyAuth(i int) string { return token(i) + ".thumb" + fmt.Sprint(i) }

// haveIPv6 reports whether the host can listen on ::1.
func haveIPv6(t *testing.T) bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func loopbackAddrs(t *testing.T) []string {
	addrs := []string{"127.0.0.1:0"}
	if haveIPv6(t) {
		addrs = append(addrs, "[::1]:0")
	}
	return addrs
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func startHTTP(t *testing.T, s *HTTP01Server) {
	t.Helper()
	if err := s.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

func TestHTTP01ServerServesAndRemoves(t *testing.T) {
	s := &HTTP01Server{ListenAddrs: loopbackAddrs(t)}
	startHTTP(t, s)
	if err := s.Add(token(1), keyAuth(1)); err != nil {
		t.Fatal(err)
	}
	for _, a := range s.Addrs() {
		base := "http://" + a.String()
		if code, body := get(t, base+"/.well-known/acme-challenge/"+token(1)); code != 200 || body != keyAuth(1) {
			t.Errorf("GET %s = %d %q, want 200 %q", base, code, body, keyAuth(1))
		}
		if code, _ := get(t, base+"/.well-known/acme-challenge/"+token(2)); code != 404 {
			t.Errorf("GET unknown token on %s = %d, want 404", base, code)
		}
		if code, _ := get(t, base+"/"); code != 404 {
			t.Errorf("GET / on %s = %d, want 404", base, code)
		}
	}
	s.Remove(token(1))
	for _, a := range s.Addrs() {
		if code, _ := get(t, "http://"+a.String()+"/.well-known/acme-challenge/"+token(1)); code != 404 {
			t.Errorf("GET removed token on %s = %d, want 404", a, code)
		}
	}
}

func TestHTTP01ServerAddRejects(t *testing.T) {
	s := &HTTP01Server{}
	for _, tt := range []struct{ token, keyAuth string }{
		{"../../../../etc/passwd", "../../../../etc/passwd.x"},
		{"short", "short.x"},
		{token(1), keyAuth(2)},
		{token(1), token(1) + "."},
		{token(1), "thumb"},
	} {
		if err := s.Add(tt.token, tt.keyAuth); err == nil {
			t.Errorf("Add(%q, %q) succeeded, want error", tt.token, tt.keyAuth)
		}
	}
	if err := s.Add("../../../../etc/passwd", "x"); !errors.Is(err, acme.ErrInvalidToken) {
		t.Errorf("Add(bad token) error = %v, want ErrInvalidToken", err)
	}
}

func TestHTTP01ServerFallback(t *testing.T) {
	s := &HTTP01Server{
		ListenAddrs: []string{"127.0.0.1:0"},
		Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "site:"+r.URL.Path)
		}),
	}
	startHTTP(t, s)
	if err := s.Add(token(1), keyAuth(1)); err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addrs()[0].String()
	for path, want := range map[string]string{
		"/index.html": "site:/index.html",
		"/.well-known/acme-challenge/" + token(9): "site:/.well-known/acme-challenge/" + token(9),
		"/.well-known/acme-challenge/" + token(1): keyAuth(1),
	} {
		if code, body := get(t, base+path); code != 200 || body != want {
			t.Errorf("GET %s = %d %q, want 200 %q", path, code, body, want)
		}
	}
}

// TestHTTP01ServerDualStack checks that ":0" is one port reachable over
// IPv4 and IPv6.
func TestHTTP01ServerDualStack(t *testing.T) {
	if !haveIPv6(t) {
		t.Skip("no IPv6 loopback")
	}
	s := &HTTP01Server{ListenAddrs: []string{":0"}}
	startHTTP(t, s)
	if err := s.Add(token(1), keyAuth(1)); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	for _, host := range []string{"127.0.0.1", "::1"} {
		url := "http://" + net.JoinHostPort(host, port) + "/.well-known/acme-challenge/" + token(1)
		if code, body := get(t, url); code != 200 || body != keyAuth(1) {
			t.Errorf("GET %s = %d %q, want 200 %q", url, code, body, keyAuth(1))
		}
	}
}

// TestTLSALPN01ServerDualStack checks that ":0" is one port answering
// tls-alpn-01 over IPv4 and IPv6.
func TestTLSALPN01ServerDualStack(t *testing.T) {
	if !haveIPv6(t) {
		t.Skip("no IPv6 loopback")
	}
	s := &TLSALPN01Server{ListenAddrs: []string{":0"}}
	startTLS(t, s)
	if err := s.Add(acme.DNS("a.example"), "ka-a"); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.Addrs()[0].String())
	for _, host := range []string{"127.0.0.1", "::1"} {
		cs, err := probe(net.JoinHostPort(host, port), "a.example", []string{"acme-tls/1"})
		if err != nil {
			t.Errorf("handshake over %s: %v", host, err)
			continue
		}
		checkALPNCert(t, cs, "ka-a")
	}
}

func TestHTTP01ServerConcurrent(t *testing.T) {
	s := &HTTP01Server{ListenAddrs: []string{"127.0.0.1:0"}}
	startHTTP(t, s)
	base := "http://" + s.Addrs()[0].String() + "/.well-known/acme-challenge/"
	const n = 100
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := s.Add(token(i), keyAuth(i)); err != nil {
				errs <- err
				return
			}
			resp, err := client.Get(base + token(i))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != keyAuth(i) {
				errs <- fmt.Errorf("token %d: body %q, want %q", i, b, keyAuth(i))
			}
			if i%2 == 0 {
				s.Remove(token(i))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		want := 200
		if i%2 == 0 {
			want = 404
		}
		if code, _ := get(t, base+token(i)); code != want {
			t.Errorf("token %d after removals: %d, want %d", i, code, want)
		}
	}
}

// TestShutdownFreesPort starts each server, shuts it down and binds its port
// again.
func TestShutdownFreesPort(t *testing.T) {
	type server interface {
		Start(context.Context) error
		Addrs() []net.Addr
		Shutdown(context.Context) error
	}
	for name, s := range map[string]server{
		"http-01":     &HTTP01Server{ListenAddrs: []string{"127.0.0.1:0"}},
		"tls-alpn-01": &TLSALPN01Server{ListenAddrs: []string{"127.0.0.1:0"}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Start(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			addr := s.Addrs()[0].String()
			// An idle client connection must not hold the shutdown up.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			if err := s.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Shutdown took %v", d)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("port not freed: %v", err)
			}
			ln.Close()
			if err := s.Start(ctxT(t)); !errors.Is(err, ErrStarted) {
				t.Errorf("Start after Shutdown = %v, want ErrStarted", err)
			}
		})
	}
}

func TestStartFailsAllOrNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	s := &HTTP01Server{ListenAddrs: []string{freeAddr, busy.Addr().String()}}
	if err := s.Start(ctxT(t)); err == nil {
		s.Shutdown(context.Background())
		t.Fatal("Start on a busy port succeeded")
	}
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("first address still bound after failed Start: %v", err)
	}
	ln.Close()
}

func startTLS(t *testing.T, s *TLSALPN01Server) {
	t.Helper()
	if err := s.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

// probe handshakes like a CA and returns the connection state.
func probe(addr, serverName string, protos []string) (tls.ConnectionState, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config:    &tls.Config{ServerName: serverName, NextProtos: protos, InsecureSkipVerify: true},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState(), nil
}

// checkALPNCert checks that the leaf carries the critical acmeIdentifier
// extension for keyAuth.
func checkALPNCert(t *testing.T, cs tls.ConnectionState, keyAuth string) {
	t.Helper()
	if cs.NegotiatedProtocol != "acme-tls/1" {
		t.Errorf("negotiated %q, want acme-tls/1", cs.NegotiatedProtocol)
	}
	sum := sha256.Sum256([]byte(keyAuth))
	leaf := cs.PeerCertificates[0]
	for _, e := range leaf.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}) {
			var v []byte
			if _, err := asn1.Unmarshal(e.Value, &v); err != nil || !e.Critical || !bytes.Equal(v, sum[:]) {
				t.Errorf("acmeIdentifier critical=%v value=%x err=%v, want critical %x", e.Critical, v, err, sum)
			}
			return
		}
	}
	t.Error("no acmeIdentifier extension")
}

func TestTLSALPN01Server(t *testing.T) {
	s := &TLSALPN01Server{ListenAddrs: loopbackAddrs(t)}
	startTLS(t, s)
	ids := map[string]acme.Identifier{
		"a.example":              acme.DNS("a.example"),
		"b.example":              acme.DNS("b.example"),
		"1.0.0.127.in-addr.arpa": acme.ParseIdentifier("127.0.0.1"),
		// Pebble sends the reverse name with a trailing dot.
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.": acme.ParseIdentifier("::1"),
	}
	for sni, id := range ids {
		if err := s.Add(id, "ka-"+sni); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range s.Addrs() {
		for sni, id := range ids {
			cs, err := probe(a.String(), sni, []string{"acme-tls/1"})
			if err != nil {
				t.Errorf("handshake %s on %s: %v", sni, a, err)
				continue
			}
			checkALPNCert(t, cs, "ka-"+sni)
			leaf := cs.PeerCertificates[0]
			if id.Type == acme.IdentifierDNS && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != id.Value) {
				t.Errorf("SNI %s: DNSNames %v, want [%s]", sni, leaf.DNSNames, id.Value)
			}
			if id.Type == acme.IdentifierIP && (len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != id.Value) {
				t.Errorf("SNI %s: IPAddresses %v, want [%s]", sni, leaf.IPAddresses, id.Value)
			}
		}
	}
	addr := s.Addrs()[0].String()
	for name, tt := range map[string]struct {
		sni    string
		protos []string
	}{
		"no ALPN":       {"a.example", nil},
		"other ALPN":    {"a.example", []string{"h2", "http/1.1"}},
		"unknown SNI":   {"c.example", []string{"acme-tls/1"}},
		"no SNI at all": {"", []string{"acme-tls/1"}},
	} {
		if _, err := probe(addr, tt.sni, tt.protos); err == nil {
			t.Errorf("%s: handshake succeeded, want failure", name)
		}
	}
	s.Remove(acme.DNS("a.example"))
	if _, err := probe(addr, "a.example", []string{"acme-tls/1"}); err == nil {
		t.Error("handshake for a removed identifier succeeded")
	}
	if _, err := probe(addr, "b.example", []string{"acme-tls/1"}); err != nil {
		t.Errorf("handshake for b.example after removing a.example: %v", err)
	}
}

func TestTLSALPN01ServerConcurrent(t *testing.T) {
	s := &TLSALPN01Server{ListenAddrs: []string{"127.0.0.1:0"}}
	startTLS(t, s)
	addr := s.Addrs()[0].String()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("host%d.example", i)
			if err := s.Add(acme.DNS(name), "ka"+name); err != nil {
				errs <- err
				return
			}
			cs, err := probe(addr, name, []string{"acme-tls/1"})
			if err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				return
			}
			if got := cs.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != name {
				errs <- fmt.Errorf("%s: presented %v", name, got)
			}
			s.Remove(acme.DNS(name))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTLSALPN01ServerAddRejects(t *testing.T) {
	s := &TLSALPN01Server{}
	for _, id := range []acme.Identifier{acme.DNS("*.example.com"), {Type: "email", Value: "a@b"}, {Type: acme.IdentifierIP, Value: "x"}} {
		if err := s.Add(id, "ka"); err == nil {
			t.Errorf("Add(%v) succeeded, want error", id)
		}
	}
	if err := s.AddCertificate(acme.DNS("a.example"), tls.Certificate{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("AddCertificate(empty) = %v, want error", err)
	}
}
