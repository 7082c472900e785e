package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"
)

// ALPNProto is the ALPN protocol name of the tls-alpn-01 challenge,
// RFC 8737 §6.2.
const ALPNProto = "acme-tls/1"

// HTTP01PathPrefix is where http-01 resources live, RFC 8555 §8.3.
const HTTP01PathPrefix = "/.well-known/acme-challenge/"

// oidACMEIdentifier is id-pe-acmeIdentifier, the certificate extension of a
// tls-alpn-01 certificate, RFC 8737 §6.1.
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// ErrUnsupportedKey is returned for a public key type the JWK thumbprint
// (and so the key authorization) cannot be computed for.
var ErrUnsupportedKey = errors.New("acme: unsupported key type")

var b64 = base64.RawURLEncoding

// JWKThumbprint returns the base64url SHA-256 JWK thumbprint of pub,
// RFC 7638 §3 as used by RFC 8555 §8.1. pub is an *rsa.PublicKey, an
// *ecdsa.PublicKey on P-256, P-384 or P-521, or an ed25519.PublicKey; a
// crypto.Signer stands for its public key.
func JWKThumbprint(pub crypto.PublicKey) (string, error) {
	if s, ok := pub.(crypto.Signer); ok {
		pub = s.Public()
	}
	// The members of each key type in lexicographic order, with no
	// whitespace, as RFC 7638 §3.2 and §3.3 require. Every value is
	// base64url, so none needs JSON escaping.
	var canonical string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.Sign() <= 0 || k.E <= 0 {
			return "", fmt.Errorf("%w: invalid RSA key", ErrUnsupportedKey)
		}
		e := big.NewInt(int64(k.E)).Bytes()
		canonical = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64.EncodeToString(e), b64.EncodeToString(k.N.Bytes()))
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return "", fmt.Errorf("%w: nil ECDSA key", ErrUnsupportedKey)
		}
		var crv string
		switch k.Curve {
		case elliptic.P256():
			crv = "P-256"
		case elliptic.P384():
			crv = "P-384"
		case elliptic.P521():
			crv = "P-521"
		default:
			return "", fmt.Errorf("%w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		// Uncompressed point: 0x04 || X || Y, each padded to the field size
		// as RFC 7518 §6.2.1.2 requires.
		pt, err := k.Bytes()
		if err != nil {
			return "", fmt.Errorf("encoding ECDSA key: %w", err)
		}
		n := (len(pt) - 1) / 2
		canonical = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, crv, b64.EncodeToString(pt[1:1+n]), b64.EncodeToString(pt[1+n:]))
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", fmt.Errorf("%w: Ed25519 key of %d bytes", ErrUnsupportedKey, len(k))
		}
		canonical = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, b64.EncodeToString(k))
	default:
		return "", fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:]), nil
}

// KeyAuthorization returns token + "." + the JWK thumbprint of the account
// key, RFC 8555 §8.1. The token is validated first (ValidateToken).
func KeyAuthorization(token string, accountKey crypto.PublicKey) (string, error) {
	if err := ValidateToken(token); err != nil {
		return "", err
	}
	thumb, err := JWKThumbprint(accountKey)
	if err != nil {
		return "", fmt.Errorf("computing key authorization: %w", err)
	}
	return token + "." + thumb, nil
}

// HTTP01ChallengePath returns the path of the http-01 resource for token,
// "/.well-known/acme-challenge/" + token, RFC 8555 §8.3. The token is
// validated first, so the path never contains anything but base64url.
func HTTP01ChallengePath(token string) (string, error) {
	if err := ValidateToken(token); err != nil {
		return "", err
	}
	return HTTP01PathPrefix + token, nil
}

// HTTP01ChallengeURL returns the URL a CA fetches to validate the http-01
// challenge token for id, RFC 8555 §8.3: "http://", the domain name (or
// the IP address, RFC 8738 §3), port 80, then HTTP01ChallengePath(token).
// Wildcard names cannot use http-01. The token and the name are checked
// first: server data that does not fit a URL's host is refused.
func HTTP01ChallengeURL(id Identifier, token string) (string, error) {
	path, err := HTTP01ChallengePath(token)
	if err != nil {
		return "", err
	}
	host, err := hostOf(id)
	if err != nil {
		return "", fmt.Errorf("building http-01 URL: %w", err)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "http://" + host + path, nil
}

// DNS01TXTRecordName returns the name of the dns-01 TXT record for domain,
// "_acme-challenge." + domain, without a leading "*." of a wildcard,
// RFC 8555 §8.4.
func DNS01TXTRecordName(domain string) string {
	return "_acme-challenge." + strings.TrimPrefix(domain, "*.")
}

// DNS01TXTRecord returns the value of the dns-01 TXT record: the base64url
// SHA-256 digest of the key authorization, RFC 8555 §8.4.
func DNS01TXTRecord(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return b64.EncodeToString(sum[:])
}

// TLSALPN01ServerName returns the TLS server name (SNI) a CA sends when it
// validates id with tls-alpn-01: the DNS name itself (RFC 8737 §3), or for an
// ip identifier its reverse-DNS name under in-addr.arpa or ip6.arpa
// (RFC 8738 §6), without a trailing dot.
func TLSALPN01ServerName(id Identifier) (string, error) {
	switch id.Type {
	case IdentifierDNS:
		if id.Value == "" || strings.HasPrefix(id.Value, "*.") {
			return "", fmt.Errorf("acme: tls-alpn-01 needs a non-wildcard DNS name, got %q", id.Value)
		}
		return strings.ToLower(strings.TrimSuffix(id.Value, ".")), nil
	case IdentifierIP:
		addr, err := netip.ParseAddr(id.Value)
		if err != nil {
			return "", fmt.Errorf("parsing ip identifier: %w", err)
		}
		return reverseName(addr.Unmap()), nil
	default:
		return "", fmt.Errorf("acme: identifier type %q has no tls-alpn-01 server name", id.Type)
	}
}

// reverseName returns the reverse-DNS name of addr without a trailing dot.
func reverseName(addr netip.Addr) string {
	var b strings.Builder
	if addr.Is4() {
		a := addr.As4()
		for i := 3; i >= 0; i-- {
			fmt.Fprintf(&b, "%d.", a[i])
		}
		b.WriteString("in-addr.arpa")
		return b.String()
	}
	const hexdig = "0123456789abcdef"
	a := addr.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hexdig[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hexdig[a[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa")
	return b.String()
}

// TLSALPN01ChallengeCert returns the self-signed certificate a server
// presents for id during tls-alpn-01 validation, RFC 8737 §3: its only
// subjectAltName is the identifier (a dNSName, or an iPAddress for an ip
// identifier per RFC 8738 §6), and it carries the critical
// id-pe-acmeIdentifier extension whose value is the DER OCTET STRING of the
// SHA-256 digest of keyAuth. The key is a fresh ECDSA P-256 key.
func TLSALPN01ChallengeCert(id Identifier, keyAuth string) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "acmehook tls-alpn-01"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	switch id.Type {
	case IdentifierDNS:
		if _, err := TLSALPN01ServerName(id); err != nil {
			return tls.Certificate{}, err
		}
		tmpl.DNSNames = []string{strings.TrimSuffix(id.Value, ".")}
	case IdentifierIP:
		addr, err := netip.ParseAddr(id.Value)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("parsing ip identifier: %w", err)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, addr.Unmap().AsSlice())
	default:
		return tls.Certificate{}, fmt.Errorf("acme: identifier type %q cannot use tls-alpn-01", id.Type)
	}
	sum := sha256.Sum256([]byte(keyAuth))
	value, err := asn1.Marshal(sum[:])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("encoding acmeIdentifier extension: %w", err)
	}
	tmpl.ExtraExtensions = []pkix.Extension{{Id: oidACMEIdentifier, Critical: true, Value: value}}

	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating serial: %w", err)
	}
	tmpl.SerialNumber = serial
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating tls-alpn-01 key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating tls-alpn-01 certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing tls-alpn-01 certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
