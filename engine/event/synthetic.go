package event

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

	"github.com/acmehook/acmehook/acme"
)

// Synthetic builds an event of type t for testing a script without a CA,
// as `acmehook script test SCRIPT EVENT --cert NAME` does, with the
// constructors the engine uses, so it has the fields the engine fills for
// that event and only those. For issued, renew and revoke it writes a
// throwaway P-256 issuer and a leaf for domains into dir (cert.pem,
// key.pem with mode 0600, chain.pem, fullchain.pem); renew has a previous
// serial and revoke the reason superseded. failed carries an ACME
// rateLimited problem and, as from the engine when a renewal fails, the
// certificate still in service; user-action-required carries a
// userActionRequired problem with an instance URL and the certificate in
// service; renewal-held a hold that ends after the certificate in
// service expires; the challenge events carry dns-01
// challenge fields and no certificate. The run-level events carry a run of
// the one certificate name: run-begin about to renew it, run-end having
// renewed and deployed it (a made-up serial; no files are written).
// tos-changed names made-up terms (v1 to v2) not agreed to. Test is set. The caller owns dir and removes it.
func Synthetic(t Type, name string, domains []string, dir string) (Event, error) {
	if !t.Valid() {
		return Event{}, fmt.Errorf("synthetic event: unknown event %q", t)
	}
	if len(domains) == 0 {
		return Event{}, errors.New("synthetic event: no domains")
	}
	var ev Event
	switch t {
	case RunBegin:
		ev = NewRunBegin(time.Now(), []RunCertificate{{Cert: name, Domains: domains, Action: "renew", Reason: "synthetic: the renewal window is open"}})
	case TOSChanged:
		ev = NewTOSChanged("https://ca.example/directory", "https://ca.example/acme/acct/synthetic",
			"https://ca.example/terms/v2.pdf", "https://ca.example/terms/v1.pdf", false)
	case RunEnd:
		ev = NewRunEnd(time.Now(), []RunCertificate{{Cert: name, Domains: domains, Action: "renewed", Reason: "synthetic: the renewal window is open",
			Serial: randSerial().Text(16), NotAfter: time.Now().Add(6 * 24 * time.Hour).Truncate(time.Second), Deployed: true}})
	case ChallengeProvision, ChallengeCleanup:
		token := make([]byte, 32)
		rand.Read(token)
		tok := base64.RawURLEncoding.EncodeToString(token)
		keyAuth := tok + ".synthetic-account-thumbprint"
		sum := sha256.Sum256([]byte(keyAuth))
		ev = NewChallenge(t, name, domains, Challenge{
			Type:             "dns-01",
			Identifier:       domains[0],
			Token:            tok,
			KeyAuthorization: keyAuth,
			DNSName:          "_acme-challenge." + strings.TrimPrefix(domains[0], "*.") + ".",
			DNSValue:         base64.RawURLEncoding.EncodeToString(sum[:]),
		})
	default:
		c, err := syntheticCertificate(domains, dir)
		if err != nil {
			return Event{}, err
		}
		switch t {
		case Issued:
			ev = NewIssued(name, domains, c)
		case Renew:
			ev = NewRenew(name, domains, c, randSerial().Text(16))
		case Revoke:
			ev = NewRevoke(name, domains, c, 4) // superseded, RFC 5280 §5.3.1
		case Failed:
			problem := &acme.Problem{
				Type:   acme.ProblemRateLimited,
				Detail: "too many certificates already issued for this exact set of identifiers",
			}
			ev = NewFailed(name, domains, &c, fmt.Errorf("synthetic failure: finalizing order: %w", problem))
		case UserActionRequired:
			problem := &acme.Problem{
				Type:     acme.ProblemUserActionRequired,
				Detail:   "the terms of service have changed; agree to them at the instance URL",
				Instance: "https://ca.example/acme/agreement/synthetic",
			}
			ev = NewUserActionRequired(name, domains, &c, fmt.Errorf("synthetic failure: creating order: %w", problem))
		case RenewalHeld:
			// Held by the reissue guard past the certificate's expiry: the
			// event an operator must act on.
			ev = NewRenewalHeld(name, domains, &c, "synthetic: the reissue guard allows no order before the hold ends", c.NotAfter.Add(time.Hour))
		}
	}
	ev.Test = true
	return ev, nil
}

// syntheticCertificate writes a throwaway issuer and a leaf for domains
// into dir and describes them.
func syntheticCertificate(domains []string, dir string) (Certificate, error) {
	now := time.Now().Truncate(time.Second)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Certificate{}, fmt.Errorf("synthetic event: generating key: %w", err)
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
		return Certificate{}, fmt.Errorf("synthetic event: creating issuer: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Certificate{}, fmt.Errorf("synthetic event: creating issuer: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Certificate{}, fmt.Errorf("synthetic event: generating key: %w", err)
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
		return Certificate{}, fmt.Errorf("synthetic event: creating certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Certificate{}, fmt.Errorf("synthetic event: encoding key: %w", err)
	}
	c := Certificate{
		Serial:        tmpl.SerialNumber.Text(16),
		Issuer:        ca.Subject.String(),
		NotBefore:     tmpl.NotBefore,
		NotAfter:      tmpl.NotAfter,
		CertPEM:       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		ChainPEM:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		CertPath:      filepath.Join(dir, "cert.pem"),
		KeyPath:       filepath.Join(dir, "key.pem"),
		ChainPath:     filepath.Join(dir, "chain.pem"),
		FullchainPath: filepath.Join(dir, "fullchain.pem"),
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{c.CertPath, []byte(c.CertPEM), 0o644},
		{c.KeyPath, keyPEM, 0o600},
		{c.ChainPath, []byte(c.ChainPEM), 0o644},
		{c.FullchainPath, []byte(c.CertPEM + c.ChainPEM), 0o644},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return Certificate{}, fmt.Errorf("synthetic event: %w", err)
		}
	}
	return c, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}
