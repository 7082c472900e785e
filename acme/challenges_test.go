package acme

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// rfc7638Key is the RSA public key of RFC 7638 §3.1, whose thumbprint the
// RFC gives as rfc7638Thumbprint. Both strings are the published example,
// copied from the RFC text.
const (
	rfc7638N          = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

func rfc7638Key(t *testing.T) *rsa.PublicKey {
	t.Helper()
	n, err := b64.DecodeString(rfc7638N)
	if err != nil {
		t.Fatal(err)
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
}

func TestJWKThumbprintRFC7638(t *testing.T) {
	got, err := JWKThumbprint(rfc7638Key(t))
	if err != nil {
		t.Fatal(err)
	}
	if got != rfc7638Thumbprint {
		t.Errorf("JWKThumbprint(RFC 7638 §3.1 key) = %s, want %s", got, rfc7638Thumbprint)
	}
}

// TestJWKThumbprintMatchesGoJose checks every supported key type against
// go-jose's independent RFC 7638 implementation; P-521 exercises the
// coordinate padding.
func TestJWKThumbprintMatchesGoJose(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]crypto.Signer{"RSA": rsaKey, "Ed25519": edKey}
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[c.Params().Name] = k
	}
	for name, k := range keys {
		t.Run(name, func(t *testing.T) {
			want, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			got, err := JWKThumbprint(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			if got != b64.EncodeToString(want) {
				t.Errorf("JWKThumbprint = %s, want %s", got, b64.EncodeToString(want))
			}
			// A signer stands for its public key.
			if fromSigner, err := JWKThumbprint(k); err != nil || fromSigner != got {
				t.Errorf("JWKThumbprint(signer) = %s, %v, want %s", fromSigner, err, got)
			}
		})
	}
}

func TestJWKThumbprintUnsupported(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]crypto.PublicKey{
		"P-224":      p224.Public(),
		"short ed":   ed25519.PublicKey{1, 2, 3},
		"nil rsa":    (*rsa.PublicKey)(nil),
		"string":     "key",
		"nil":        nil,
		"ecdh-alike": []byte{1},
	} {
		if _, err := JWKThumbprint(k); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("JWKThumbprint(%s) error = %v, want ErrUnsupportedKey", name, err)
		}
	}
}

func TestKeyAuthorization(t *testing.T) {
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	got, err := KeyAuthorization(token, rfc7638Key(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := token + "." + rfc7638Thumbprint; got != want {
		t.Errorf("KeyAuthorization = %s, want %s", got, want)
	}
	for _, bad := range []string{"", "short", "../../../../etc/passwd/aaaaaaaaaaaaaa", "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ+PCt92wr/oA=", strings.Repeat("a", 22) + "\n"} {
		if _, err := KeyAuthorization(bad, rfc7638Key(t)); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("KeyAuthorization(%q) error = %v, want ErrInvalidToken", bad, err)
		}
	}
	if _, err := KeyAuthorization(token, "not a key"); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("KeyAuthorization(bad key) error = %v, want ErrUnsupportedKey", err)
	}
}

func TestHTTP01ChallengePath(t *testing.T) {
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	got, err := HTTP01ChallengePath(token)
	if err != nil || got != "/.well-known/acme-challenge/"+token {
		t.Errorf("HTTP01ChallengePath = %q, %v", got, err)
	}
	for _, bad := range []string{"", "../../etc/passwd", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa/../x", "aaaaaaaaaaaaaaaaaaaaaa?x=1", "aaaaaaaaaaaaaaaaaaaaaa%2F"} {
		if p, err := HTTP01ChallengePath(bad); !errors.Is(err, ErrInvalidToken) || p != "" {
			t.Errorf("HTTP01ChallengePath(%q) = %q, %v, want ErrInvalidToken", bad, p, err)
		}
	}
}

func TestHTTP01ChallengeURL(t *testing.T) {
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	tests := []struct {
		id      Identifier
		token   string
		want    string
		wantErr error
	}{
		{DNS("www.example.com"), token, "http://www.example.com/.well-known/acme-challenge/" + token, nil},
		{DNS("www.example.com."), token, "http://www.example.com/.well-known/acme-challenge/" + token, nil},
		{ParseIdentifier("192.0.2.1"), token, "http://192.0.2.1/.well-known/acme-challenge/" + token, nil},
		{ParseIdentifier("2001:db8::1"), token, "http://[2001:db8::1]/.well-known/acme-challenge/" + token, nil},
		{DNS("www.example.com"), "../../etc/passwd", "", ErrInvalidToken},
		{DNS("*.example.com"), token, "", nil},
		{DNS("evil.example/x?"), token, "", nil},
		{DNS("user@evil.example"), token, "", nil},
		{DNS("evil.example:8080"), token, "", nil},
		{DNS("evil.example#"), token, "", nil},
		{DNS(""), token, "", nil},
		{Identifier{Type: IdentifierIP, Value: "256.0.0.1"}, token, "", nil},
		{Identifier{Type: "email", Value: "a@example.com"}, token, "", nil},
	}
	for _, tt := range tests {
		got, err := HTTP01ChallengeURL(tt.id, tt.token)
		if tt.want != "" {
			if got != tt.want || err != nil {
				t.Errorf("HTTP01ChallengeURL(%v, %q) = %q, %v, want %q", tt.id, tt.token, got, err, tt.want)
			}
			continue
		}
		if err == nil || got != "" || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
			t.Errorf("HTTP01ChallengeURL(%v, %q) = %q, %v, want an error", tt.id, tt.token, got, err)
		}
	}
}

func TestDNS01(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":       "_acme-challenge.example.com",
		"*.example.com":     "_acme-challenge.example.com",
		"www.example.org.":  "_acme-challenge.www.example.org.",
		"*.a.b.example.net": "_acme-challenge.a.b.example.net",
	} {
		if got := DNS01TXTRecordName(in); got != want {
			t.Errorf("DNS01TXTRecordName(%q) = %q, want %q", in, got, want)
		}
	}
	// Produced with: printf abc | openssl dgst -sha256 -binary | basenc --base64url
	// (then the padding "=" removed).
	if got, want := DNS01TXTRecord("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"; got != want {
		t.Errorf("DNS01TXTRecord(abc) = %s, want %s", got, want)
	}
	// Produced the same way from the key authorization of the RFC 7638 key.
	ka := "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + rfc7638Thumbprint
	if got, want := DNS01TXTRecord(ka), "ZTRx1Ckl1-tM05o5zaizTTA0yUy5AGereMgSNWC6Ll8"; got != want {
		t.Errorf("DNS01TXTRecord(%s) = %s, want %s", ka, got, want)
	}
}

func TestTLSALPN01ServerName(t *testing.T) {
	tests := []struct {
		id      Identifier
		want    string
		wantErr bool
	}{
		{id: DNS("Example.COM"), want: "example.com"},
		{id: DNS("example.com."), want: "example.com"},
		{id: Identifier{Type: IdentifierIP, Value: "192.0.2.10"}, want: "10.2.0.192.in-addr.arpa"},
		{id: Identifier{Type: IdentifierIP, Value: "::ffff:127.0.0.1"}, want: "1.0.0.127.in-addr.arpa"},
		{id: Identifier{Type: IdentifierIP, Value: "2001:db8::1"}, want: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
		{id: DNS("*.example.com"), wantErr: true},
		{id: DNS(""), wantErr: true},
		{id: Identifier{Type: IdentifierIP, Value: "300.1.1.1"}, wantErr: true},
		{id: Identifier{Type: "email", Value: "a@b"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := TLSALPN01ServerName(tt.id)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("TLSALPN01ServerName(%v) = %q, %v, want %q (error %v)", tt.id, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestTLSALPN01ChallengeCert(t *testing.T) {
	const keyAuth = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + rfc7638Thumbprint
	sum := sha256.Sum256([]byte(keyAuth))
	// DER OCTET STRING: tag 0x04, length 0x20, then the digest.
	wantExt := append([]byte{0x04, 0x20}, sum[:]...)

	tests := []struct {
		id       Identifier
		wantDNS  []string
		wantIP   string
		wantFail bool
	}{
		{id: DNS("example.com"), wantDNS: []string{"example.com"}},
		{id: Identifier{Type: IdentifierIP, Value: "127.0.0.1"}, wantIP: "127.0.0.1"},
		{id: Identifier{Type: IdentifierIP, Value: "2001:db8::1"}, wantIP: "2001:db8::1"},
		{id: DNS("*.example.com"), wantFail: true},
		{id: Identifier{Type: IdentifierIP, Value: "nope"}, wantFail: true},
		{id: Identifier{Type: "email", Value: "x"}, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.id.Type+" "+tt.id.Value, func(t *testing.T) {
			cert, err := TLSALPN01ChallengeCert(tt.id, keyAuth)
			if tt.wantFail {
				if err == nil {
					t.Fatal("TLSALPN01ChallengeCert succeeded, want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if tt.wantIP != "" && (len(ips) != 1 || !net.ParseIP(ips[0]).Equal(net.ParseIP(tt.wantIP))) {
				t.Errorf("IPAddresses = %v, want [%s]", ips, tt.wantIP)
			}
			if tt.wantIP == "" && len(ips) != 0 {
				t.Errorf("IPAddresses = %v, want none", ips)
			}
			var found int
			for _, e := range leaf.Extensions {
				if !e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}) {
					continue
				}
				found++
				if !e.Critical {
					t.Error("acmeIdentifier extension not critical")
				}
				if !bytes.Equal(e.Value, wantExt) {
					t.Errorf("acmeIdentifier = %x, want %x", e.Value, wantExt)
				}
			}
			if found != 1 {
				t.Errorf("%d acmeIdentifier extensions, want 1", found)
			}
			if pub, ok := cert.PrivateKey.(crypto.Signer); !ok || !pub.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
				t.Error("private key does not match the certificate")
			}
		})
	}
}

func TestJWKThumbprintInvalidRSA(t *testing.T) {
	for name, k := range map[string]*rsa.PublicKey{
		"no modulus": {E: 65537},
		"zero e":     {N: big.NewInt(12345), E: 0},
	} {
		if _, err := JWKThumbprint(k); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("JWKThumbprint(%s) error = %v, want ErrUnsupportedKey", name, err)
		}
	}
}
