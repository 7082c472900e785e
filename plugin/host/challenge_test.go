package host_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"testing"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

func TestNewChallenge(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	keyAuth, err := acme.KeyAuthorization(token, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	authz := acme.Authorization{Identifier: acme.DNS("example.com"), Wildcard: true}

	c, err := host.NewChallenge(authz, acme.Challenge{Type: "dns-01", Token: token, URL: "https://ca/chall/1"}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	want := sdk.Challenge{
		Type: "dns-01", Identifier: sdk.Identifier{Type: "dns", Value: "example.com", Wildcard: true},
		Token: token, KeyAuthorization: keyAuth, URL: "https://ca/chall/1",
		DNS01RecordName: "_acme-challenge.example.com.", DNS01RecordValue: acme.DNS01TXTRecord(keyAuth),
	}
	if c.Type != want.Type || c.Identifier != want.Identifier || c.Token != want.Token || c.KeyAuthorization != want.KeyAuthorization ||
		c.URL != want.URL || c.DNS01RecordName != want.DNS01RecordName || c.DNS01RecordValue != want.DNS01RecordValue || c.TLSALPN01CertPEM != nil {
		t.Errorf("NewChallenge(dns-01) = %+v, want %+v", c, want)
	}

	c, err = host.NewChallenge(acme.Authorization{Identifier: acme.DNS("example.com")}, acme.Challenge{Type: "tls-alpn-01", Token: token}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c.TLSALPN01CertPEM, c.TLSALPN01KeyPEM)
	if err != nil {
		t.Fatalf("tls-alpn-01 PEM does not load: %v", err)
	}
	if names := pair.Leaf.DNSNames; len(names) != 1 || names[0] != "example.com" || c.DNS01RecordName != "" {
		t.Errorf("tls-alpn-01 certificate names %v, record name %q; want [example.com] and none", names, c.DNS01RecordName)
	}

	if _, err := host.NewChallenge(authz, acme.Challenge{Type: "http-01", Token: "../etc"}, key.Public()); !errors.Is(err, acme.ErrInvalidToken) {
		t.Errorf("NewChallenge(bad token) = %v, want %v", err, acme.ErrInvalidToken)
	}
}
