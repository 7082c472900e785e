package standalone_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/acme/standalone"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// TestPebbleValidates has Pebble's validation authority validate several
// identifiers at once (two DNS names and an IP address, whose tls-alpn-01
// SNI is its reverse-DNS name) against both servers, after acme.Verifier
// self-checked each challenge the same way, and issues a certificate.
func TestPebbleValidates(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	httpSrv := &standalone.HTTP01Server{ListenAddrs: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort))}}
	tlsSrv := &standalone.TLSALPN01Server{ListenAddrs: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.TLSPort))}}
	for _, s := range []interface{ Start(context.Context) error }{httpSrv, tlsSrv} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	defer httpSrv.Shutdown(context.Background())
	defer tlsSrv.Shutdown(context.Background())

	c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := c.NewAccount(ctx, acme.Account{Key: accountKey, TermsOfServiceAgreed: true}, nil)
	if err != nil {
		t.Fatalf("NewAccount: %v", err)
	}
	verifier := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, HTTPPort: pebble.HTTPPort, TLSPort: pebble.TLSPort, Timeout: 5 * time.Second}

	for _, typ := range []string{acme.ChallengeHTTP01, acme.ChallengeTLSALPN01} {
		t.Run(typ, func(t *testing.T) {
			ids := []acme.Identifier{acme.DNS("one." + typ + ".example"), acme.DNS("two." + typ + ".example"), acme.ParseIdentifier("127.0.0.1")}
			order, err := c.NewOrder(ctx, acct, acme.Order{Identifiers: ids})
			if err != nil {
				t.Fatalf("NewOrder: %v", err)
			}
			for _, u := range order.Authorizations {
				authz, err := c.GetAuthorization(ctx, acct, u)
				if err != nil {
					t.Fatalf("GetAuthorization: %v", err)
				}
				if authz.Status == acme.StatusValid {
					continue
				}
				ch, ok := authz.Challenge(typ)
				if !ok {
					t.Fatalf("%s offers no %s challenge", authz.Identifier, typ)
				}
				ka, err := acme.KeyAuthorization(ch.Token, accountKey.Public())
				if err != nil {
					t.Fatal(err)
				}
				if typ == acme.ChallengeHTTP01 {
					if err := httpSrv.Add(ch.Token, ka); err != nil {
						t.Fatal(err)
					}
					defer httpSrv.Remove(ch.Token)
					err = verifier.HTTP01(ctx, authz.Identifier, ch.Token, ka)
				} else {
					if err := tlsSrv.Add(authz.Identifier, ka); err != nil {
						t.Fatal(err)
					}
					defer tlsSrv.Remove(authz.Identifier)
					err = verifier.TLSALPN01(ctx, authz.Identifier, ka)
				}
				if err != nil {
					t.Fatalf("self-check of %s: %v", authz.Identifier, err)
				}
				if _, err := c.AcceptChallenge(ctx, acct, ch); err != nil {
					t.Fatalf("AcceptChallenge: %v", err)
				}
			}
			for _, u := range order.Authorizations {
				if authz, err := c.WaitAuthorization(ctx, acct, u); err != nil || authz.Status != acme.StatusValid {
					t.Fatalf("WaitAuthorization = %s, %v, want valid", authz.Status, err)
				}
			}
			certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := acme.NewCSR(certKey, ids)
			if err != nil {
				t.Fatal(err)
			}
			order, err = c.FinalizeOrder(ctx, acct, order, csr)
			if err != nil {
				t.Fatalf("FinalizeOrder: %v", err)
			}
			chain, err := c.FetchCertificate(ctx, acct, order.Certificate)
			if err != nil {
				t.Fatalf("FetchCertificate: %v", err)
			}
			inter := x509.NewCertPool()
			for _, ic := range chain.Certificates[1:] {
				inter.AddCert(ic)
			}
			leaf := chain.Certificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pebble.Roots(t, 0), Intermediates: inter}); err != nil {
				t.Fatalf("issued certificate does not chain to Pebble's root: %v", err)
			}
			for _, id := range ids {
				if err := leaf.VerifyHostname(id.Value); err != nil {
					t.Errorf("certificate does not cover %s: %v", id, err)
				}
			}
		})
	}
}
