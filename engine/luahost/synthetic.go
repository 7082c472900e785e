package luahost

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SyntheticEvent builds an event for testing a script without a CA, as
// "acmehook script test SCRIPT EVENT --cert NAME" does. It fills the
// fields the engine fills for that event, and only those. For issued,
// renew and revoke it writes a throwaway P-256 issuer and a leaf for
// domains into dir (cert.pem, key.pem with mode 0600, chain.pem,
// fullchain.pem) and fills paths and PEMs, serial, validity and issuer,
// previous_serial on renew and revocation_reason on revoke. failed carries
// an ACME problem and, as from the engine when a renewal fails, the
// certificate still in service; the challenge events carry dns-01
// challenge fields and no certificate. Test is set. The caller owns dir and
// removes it.
func SyntheticEvent(name EventName, certName string, domains []string, dir string) (Event, error) {
	if !name.Valid() {
		return Event{}, fmt.Errorf("luahost: synthetic event: unknown event %q", name)
	}
	if len(domains) == 0 {
		return Event{}, errors.New("luahost: synthetic event: no domains")
	}
	ev := Event{Name: name, CertName: certName, Domains: domains, Test: true}
	switch name {
	case Failed:
		ev.Error = &EventError{
			Message:       "synthetic failure: finalizing order: too many certificates already issued",
			ProblemType:   "urn:ietf:params:acme:error:rateLimited",
			ProblemDetail: "too many certificates already issued for this exact set of identifiers",
		}
	case ChallengeProvision, ChallengeCleanup:
		token := make([]byte, 32)
		rand.Read(token)
		tok := base64.RawURLEncoding.EncodeToString(token)
		keyAuth := tok + ".synthetic-account-thumbprint"
		sum := sha256.Sum256([]byte(keyAuth))
		ev.Challenge = &Challenge{
			Type:             "dns-01",
			Identifier:       domains[0],
			Token:            tok,
			KeyAuthorization: keyAuth,
			DNSName:          "_acme-challenge." + strings.TrimPrefix(domains[0], "*.") + ".",
			DNSValue:         base64.RawURLEncoding.EncodeToString(sum[:]),
		}
		return ev, nil
	}

	now := time.Now().Truncate(time.Second)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: generating key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "acmehook synthetic test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: creating issuer: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: creating issuer: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: generating key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: domains[0]},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(6 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, d := range domains {
		if ip := net.ParseIP(d); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, d)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: creating certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Event{}, fmt.Errorf("synthetic event: encoding key: %w", err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	chainPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	ev.CertPath = filepath.Join(dir, "cert.pem")
	ev.KeyPath = filepath.Join(dir, "key.pem")
	ev.ChainPath = filepath.Join(dir, "chain.pem")
	ev.FullchainPath = filepath.Join(dir, "fullchain.pem")
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{ev.CertPath, []byte(certPEM), 0o644},
		{ev.KeyPath, keyPEM, 0o600},
		{ev.ChainPath, []byte(chainPEM), 0o644},
		{ev.FullchainPath, []byte(certPEM + chainPEM), 0o644},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return Event{}, fmt.Errorf("synthetic event: %w", err)
		}
	}
	ev.CertPEM, ev.ChainPEM, ev.FullchainPEM = certPEM, chainPEM, certPEM+chainPEM
	ev.Serial = tmpl.SerialNumber.Text(16)
	ev.NotBefore, ev.NotAfter = tmpl.NotBefore, tmpl.NotAfter
	ev.Issuer = ca.Subject.String()

	switch name {
	case Renew:
		ev.PreviousSerial = randSerial().Text(16)
	case Revoke:
		ev.RevocationReason = 4 // superseded, RFC 5280 §5.3.1
	}
	return ev, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}
