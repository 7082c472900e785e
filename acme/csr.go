package acme

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// NewCSR returns a DER certificate signing request for ids, signed by key,
// as FinalizeOrder sends it (RFC 8555 §7.4): dns identifiers become DNS
// SANs, ip identifiers IP SANs (RFC 8738 §3); the subject CN is the first
// dns identifier when it fits in 64 bytes. key must not be the account key.
func NewCSR(key crypto.Signer, ids []Identifier) ([]byte, error) {
	if len(ids) == 0 {
		return nil, errors.New("acme: creating CSR: no identifiers")
	}
	if _, err := SigningAlgorithm(key); err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, id := range ids {
		switch id.Type {
		case IdentifierDNS:
			tmpl.DNSNames = append(tmpl.DNSNames, id.Value)
			if tmpl.Subject.CommonName == "" && len(id.Value) <= 64 {
				tmpl.Subject = pkix.Name{CommonName: id.Value}
			}
		case IdentifierIP:
			a, err := netip.ParseAddr(id.Value)
			if err != nil {
				return nil, fmt.Errorf("creating CSR: ip identifier %q: %w", id.Value, err)
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		default:
			return nil, fmt.Errorf("acme: creating CSR: unsupported identifier type %q", id.Type)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return der, nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
