package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// binary is this plugin, built once by TestMain.
var binary string

func TestMain(m *testing.M) { sdktest.Main(m, "standalone", &binary) }

func freeAddr(t *testing.T) (string, int) {
	t.Helper()
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port
}

func launch(t *testing.T, httpAddr, tlsAddr string) *host.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "standalone", Path: binary,
		Config: map[string]any{"http_listen": []any{httpAddr}, "tls_listen": []any{tlsAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestInfoWithoutHTTP: configured with http_listen = [], the plugin
// process offers tls-alpn-01 alone.
func TestInfoWithoutHTTP(t *testing.T) {
	tlsAddr, _ := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "standalone", Path: binary,
		Config: map[string]any{"http_listen": []any{}, "tls_listen": []any{tlsAddr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil || len(info.ChallengeTypes) != 1 || info.ChallengeTypes[0] != "tls-alpn-01" {
		t.Errorf("Info() = %+v, %v, want challenge types [tls-alpn-01]", info, err)
	}
}

var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// TestServesRealRequests runs the plugin as a subprocess and sends it a real
// http-01 request and a real tls-alpn-01 handshake.
func TestServesRealRequests(t *testing.T) {
	httpAddr, _ := freeAddr(t)
	tlsAddr, _ := freeAddr(t)
	p := launch(t, httpAddr, tlsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	const keyAuth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	id := sdk.Identifier{Type: "dns", Value: "standalone.example.com"}
	httpCh := sdk.Challenge{Type: "http-01", Identifier: id, Token: token, KeyAuthorization: keyAuth}
	tlsCh, err := host.NewChallenge(acme.Authorization{Identifier: acme.DNS(id.Value)}, acme.Challenge{Type: "tls-alpn-01", Token: token}, mustKey(t))
	if err != nil {
		t.Fatal(err)
	}

	get := func() (int, string) {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + httpAddr + acme.HTTP01PathPrefix + token)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	handshake := func() (*x509.Certificate, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", tlsAddr, &tls.Config{
			ServerName: id.Value, NextProtos: []string{acme.ALPNProto}, InsecureSkipVerify: true,
		})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}

	for _, c := range []sdk.Challenge{httpCh, tlsCh} {
		if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
			t.Fatalf("Present(%s) = %v", c.Type, err)
		}
	}
	if code, body := get(); code != 200 || body != keyAuth {
		t.Errorf("GET after Present = %d %q, want 200 %q", code, body, keyAuth)
	}
	cert, err := handshake()
	if err != nil {
		t.Fatalf("tls-alpn-01 handshake after Present = %v", err)
	}
	digest := sha256.Sum256([]byte(tlsCh.KeyAuthorization))
	want, _ := asn1.Marshal(digest[:])
	found := false
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidACMEIdentifier) {
			found = ext.Critical && string(ext.Value) == string(want)
		}
	}
	if !found || len(cert.DNSNames) != 1 || cert.DNSNames[0] != id.Value {
		t.Errorf("tls-alpn-01 certificate: names %v, acmeIdentifier matching %v; want [%s], true", cert.DNSNames, found, id.Value)
	}

	for _, c := range []sdk.Challenge{httpCh, tlsCh} {
		if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
			t.Fatalf("CleanUp(%s) = %v", c.Type, err)
		}
	}
	if code, _ := get(); code != 404 {
		t.Errorf("GET after CleanUp = %d, want 404", code)
	}
	if _, err := handshake(); err == nil {
		t.Error("tls-alpn-01 handshake after CleanUp succeeded, want failure")
	}

	// A hostile token never reaches the server's table.
	httpCh.Token = "../x;rm -rf /\nAAAAAAAAAAAAAAAAAAAA"
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: httpCh}); err == nil {
		t.Error("Present(hostile token) = nil, want error")
	}

	// Closing the plugin frees the addresses.
	p.Close()
	for _, addr := range []string{httpAddr, tlsAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listening on %s after Close = %v, want it free", addr, err)
			continue
		}
		l.Close()
	}
}

// TestDualStackAndCleanExit: with the default form of address (":port",
// no host) the plugin subprocess answers http-01 and tls-alpn-01 over IPv4
// and, where the host has it, IPv6 loopback; stopped, it exits by itself
// with status 0 rather than being killed.
func TestDualStackAndCleanExit(t *testing.T) {
	_, httpPort := freeAddr(t)
	_, tlsPort := freeAddr(t)
	logs := &sdktest.LogBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "standalone", Path: binary,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Config: map[string]any{"http_listen": []any{":" + strconv.Itoa(httpPort)}, "tls_listen": []any{":" + strconv.Itoa(tlsPort)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	const keyAuth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	id := sdk.Identifier{Type: "dns", Value: "dual.example.com"}
	tlsCh, err := host.NewChallenge(acme.Authorization{Identifier: acme.DNS(id.Value)}, acme.Challenge{Type: "tls-alpn-01", Token: token}, mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []sdk.Challenge{{Type: "http-01", Identifier: id, Token: token, KeyAuthorization: keyAuth}, tlsCh} {
		if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
			t.Fatalf("Present(%s) = %v", c.Type, err)
		}
	}
	hosts := []string{"127.0.0.1"}
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		l.Close()
		hosts = append(hosts, "::1")
	} else {
		t.Logf("no IPv6 loopback (%v): checking IPv4 only", err)
	}
	for _, host := range hosts {
		hc := &http.Client{Timeout: 5 * time.Second}
		resp, err := hc.Get("http://" + net.JoinHostPort(host, strconv.Itoa(httpPort)) + acme.HTTP01PathPrefix + token)
		if err != nil {
			t.Errorf("http-01 over %s: %v", host, err)
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != keyAuth {
				t.Errorf("http-01 over %s = %d %q, want 200 %q", host, resp.StatusCode, b, keyAuth)
			}
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(host, strconv.Itoa(tlsPort)),
			&tls.Config{ServerName: id.Value, NextProtos: []string{acme.ALPNProto}, InsecureSkipVerify: true})
		if err != nil {
			t.Errorf("tls-alpn-01 over %s: %v", host, err)
		} else {
			if names := conn.ConnectionState().PeerCertificates[0].DNSNames; len(names) != 1 || names[0] != id.Value {
				t.Errorf("tls-alpn-01 over %s: certificate for %v, want [%s]", host, names, id.Value)
			}
			conn.Close()
		}
	}
	p.Close()
	out := logs.String()
	if !strings.Contains(out, `level=INFO msg="plugin process exited"`) || strings.Contains(out, "failed to exit gracefully") {
		t.Errorf("plugin did not exit cleanly when stopped; host log:\n%s", out)
	}
}

// TestIssueWithPebble: one issuance per challenge type, solved by the
// plugin subprocess listening on Pebble's validation ports.
func TestIssueWithPebble(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	p := launch(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort)), net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.TLSPort)))
	c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	for _, typ := range []string{acme.ChallengeHTTP01, acme.ChallengeTLSALPN01} {
		t.Run(typ, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			name := typ + ".standalone.example.com"
			chain, err := sdktest.Issue(ctx, c, p, typ, []acme.Identifier{acme.DNS(name)})
			if err != nil {
				t.Fatalf("Issue = %v", err)
			}
			inter := x509.NewCertPool()
			for _, ic := range chain.Certificates[1:] {
				inter.AddCert(ic)
			}
			if _, err := chain.Certificates[0].Verify(x509.VerifyOptions{Roots: pebble.Roots(t, 0), Intermediates: inter, DNSName: name}); err != nil {
				t.Errorf("issued certificate does not verify: %v", err)
			}
		})
	}
}

func mustKey(t *testing.T) *ecdsa.PublicKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}
