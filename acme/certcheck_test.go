package acme

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPKI is a root, an intermediate and a leaf key, generated once per
// test binary.
type testPKI struct {
	rootKey, interKey, leafKey *ecdsa.PrivateKey
	root, inter                *x509.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

// now is the fixed time the certificate tests check at.
var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func getPKI(t testing.TB) testPKI {
	pkiOnce.Do(func() {
		gen := func() *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			return k
		}
		pki.rootKey, pki.interKey, pki.leafKey = gen(), gen(), gen()
		ca := func(cn string, serial int64) *x509.Certificate {
			return &x509.Certificate{
				SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
				NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
				KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
			}
		}
		rt := ca("Test Root", 1)
		der, err := x509.CreateCertificate(rand.Reader, rt, rt, pki.rootKey.Public(), pki.rootKey)
		if err != nil {
			panic(err)
		}
		pki.root, _ = x509.ParseCertificate(der)
		der, err = x509.CreateCertificate(rand.Reader, ca("Test Intermediate", 2), pki.root, pki.interKey.Public(), pki.rootKey)
		if err != nil {
			panic(err)
		}
		pki.inter, _ = x509.ParseCertificate(der)
	})
	return pki
}

// leaf issues a leaf for the test key from the intermediate, edited by
// edit, and returns the chain leaf, intermediate.
func (p testPKI) leaf(t testing.TB, edit func(c *x509.Certificate)) []*x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		DNSNames:     []string{"example.com", "*.example.com"},
		IPAddresses:  []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	var pub crypto.PublicKey = p.leafKey.Public()
	if edit != nil {
		edit(tmpl)
		if tmpl.PublicKey != nil {
			pub = tmpl.PublicKey
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter, pub, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{c, p.inter}
}

func TestVerifyCertificate(t *testing.T) {
	p := getPKI(t)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ids := []Identifier{DNS("example.com"), DNS("*.example.com"), ParseIdentifier("192.0.2.1"), ParseIdentifier("2001:db8::1")}
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	strangerRoots := x509.NewCertPool()
	strangerRoots.AddCert(selfSigned(t, otherKey))

	tests := []struct {
		name  string
		chain func() []*x509.Certificate
		ids   []Identifier
		key   crypto.PublicKey
		now   time.Time
		roots *x509.CertPool
		want  string // the exact error, "" for none
	}{
		{name: "good, to the roots", roots: roots},
		{name: "good, no roots"},
		{name: "names compared case-insensitively, IPs canonically, in any order",
			ids: []Identifier{ParseIdentifier("2001:DB8:0::1"), DNS("*.EXAMPLE.com"), DNS("Example.COM."), {Type: IdentifierIP, Value: "::ffff:192.0.2.1"}}},
		{name: "notBefore within the clock skew", chain: func() []*x509.Certificate {
			return p.leaf(t, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Minute) })
		}, roots: roots},
		{name: "empty chain", chain: func() []*x509.Certificate { return nil },
			want: "acme: certificate refused: empty chain"},
		{name: "a name missing", ids: append(ids[:len(ids):len(ids)], DNS("www.example.com")),
			want: "acme: certificate refused: names differ from the request: leaf names [example.com *.example.com 192.0.2.1 2001:db8::1] (missing www.example.com)"},
		{name: "a name not requested", ids: ids[1:],
			want: "acme: certificate refused: names differ from the request: leaf names [example.com *.example.com 192.0.2.1 2001:db8::1] (not requested example.com)"},
		{name: "the wildcard is not the apex", ids: []Identifier{DNS("example.com"), DNS("www.example.com"), ids[2], ids[3]},
			want: "acme: certificate refused: names differ from the request: leaf names [example.com *.example.com 192.0.2.1 2001:db8::1] (missing www.example.com; not requested *.example.com)"},
		{name: "an email SAN", chain: func() []*x509.Certificate {
			return p.leaf(t, func(c *x509.Certificate) { c.EmailAddresses = []string{"a@example.com"} })
		}, want: "acme: certificate refused: names differ from the request: leaf names [example.com *.example.com 192.0.2.1 2001:db8::1] (not requested email a@example.com)"},
		{name: "a URI SAN", chain: func() []*x509.Certificate {
			return p.leaf(t, func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "spiffe", Host: "x", Path: "/y"}} })
		}, want: "acme: certificate refused: names differ from the request: leaf names [example.com *.example.com 192.0.2.1 2001:db8::1] (not requested uri spiffe://x/y)"},
		{name: "another key", key: otherKey.Public(),
			want: "acme: certificate refused: not for the CSR's key: leaf key is another *ecdsa.PublicKey"},
		{name: "no key", want: "acme: certificate refused: not for the CSR's key: no key to compare the leaf's with"},
		{name: "not yet valid", chain: func() []*x509.Certificate {
			return p.leaf(t, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour) })
		}, want: "acme: certificate refused: not yet valid: notBefore 2026-06-01T13:00:00Z is after 2026-06-01T12:00:00Z"},
		{name: "expired", now: now.Add(91 * 24 * time.Hour),
			want: "acme: certificate refused: expired: notAfter 2026-08-30T12:00:00Z is not after 2026-08-31T12:00:00Z"},
		{name: "CA certificate as leaf", chain: func() []*x509.Certificate {
			return p.leaf(t, func(c *x509.Certificate) { c.BasicConstraintsValid, c.IsCA = true, true })
		}, want: "acme: certificate refused: leaf is a CA certificate: SAN example.com has basicConstraints CA:TRUE"},
		{name: "broken chain", chain: func() []*x509.Certificate {
			return []*x509.Certificate{p.leaf(t, nil)[0], p.root}
		}, want: "acme: certificate refused: broken chain: certificate 0 (SAN example.com) is not signed by certificate 1 (CN=Test Root): x509: ECDSA verification failure"},
		{name: "intermediate not signed by the next", chain: func() []*x509.Certificate {
			return append(p.leaf(t, nil), selfSigned(t, otherKey))
		}, want: "acme: certificate refused: broken chain: certificate 1 (CN=Test Intermediate) is not signed by certificate 2 (CN=Stranger): x509: ECDSA verification failure"},
		{name: "untrusted", roots: strangerRoots,
			want: `acme: certificate refused: not trusted: issuer "Test Intermediate": x509: certificate signed by unknown authority`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain := p.leaf(t, nil)
			if tt.chain != nil {
				chain = tt.chain()
			}
			key := crypto.PublicKey(p.leafKey.Public())
			if tt.key != nil || strings.HasPrefix(tt.name, "no key") {
				key = tt.key
			}
			id := ids
			if tt.ids != nil {
				id = tt.ids
			}
			at := now
			if !tt.now.IsZero() {
				at = tt.now
			}
			err := VerifyCertificate(chain, key, id, at, tt.roots)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("VerifyCertificate = %v, want nil", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("VerifyCertificate = %v\nwant %s", err, tt.want)
			}
			var ce *CertificateError
			if tt.want != "" && (!errors.As(err, &ce) || !errors.Is(err, ce.Reason)) {
				t.Errorf("VerifyCertificate = %#v, want a *CertificateError matching its reason", err)
			}
		})
	}
}

func selfSigned(t testing.TB, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "Stranger"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// FuzzVerifyCertificate feeds PEM chains to ParseChainPEM and
// VerifyCertificate: they must return an error or nil, never panic, and
// nothing but the genuine chain passes.
func FuzzVerifyCertificate(f *testing.F) {
	p := getPKI(f)
	genuine := p.leaf(f, nil)
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	encode := func(certs ...*x509.Certificate) []byte {
		var b bytes.Buffer
		for _, c := range certs {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		return b.Bytes()
	}
	f.Add(encode(genuine...))
	f.Add(encode(genuine[0]))
	f.Add(encode(genuine[0], p.inter, p.root))
	f.Add(encode(p.inter, genuine[0]))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	ids := []Identifier{DNS("example.com"), DNS("*.example.com"), ParseIdentifier("192.0.2.1"), ParseIdentifier("2001:db8::1")}
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := ParseChainPEM(data)
		if err != nil {
			return
		}
		for _, r := range []*x509.CertPool{nil, roots} {
			err := VerifyCertificate(chain, p.leafKey.Public(), ids, now, r)
			if err == nil && !chain[0].Equal(genuine[0]) {
				t.Fatalf("VerifyCertificate accepted a leaf that is not the genuine one: %x", chain[0].Raw)
			}
			if err != nil {
				var ce *CertificateError
				if !errors.As(err, &ce) {
					t.Fatalf("VerifyCertificate = %v, want a *CertificateError", err)
				}
			}
		}
	})
}
