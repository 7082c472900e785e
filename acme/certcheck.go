package acme

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// CertificateReason says why VerifyCertificate refused a certificate. It
// is an error itself, so errors.Is(err, acme.CertificateWrongNames)
// matches a *CertificateError with that reason.
type CertificateReason string

// Error returns the reason.
func (r CertificateReason) Error() string { return string(r) }

// Reasons an issued certificate is refused.
const (
	// CertificateEmptyChain: the chain holds no certificate.
	CertificateEmptyChain CertificateReason = "empty chain"
	// CertificateWrongNames: the leaf's subjectAltNames are not exactly
	// the requested identifiers.
	CertificateWrongNames CertificateReason = "names differ from the request"
	// CertificateWrongKey: the leaf is not for the CSR's key.
	CertificateWrongKey CertificateReason = "not for the CSR's key"
	// CertificateNotYetValid: the leaf's notBefore is later than now
	// (beyond MaxClockSkew).
	CertificateNotYetValid CertificateReason = "not yet valid"
	// CertificateExpired: the leaf's notAfter has passed.
	CertificateExpired CertificateReason = "expired"
	// CertificateIsCA: the leaf is a CA certificate.
	CertificateIsCA CertificateReason = "leaf is a CA certificate"
	// CertificateBadChain: a certificate of the chain is not signed by the
	// next one.
	CertificateBadChain CertificateReason = "broken chain"
	// CertificateUntrusted: the chain does not verify to the given roots.
	CertificateUntrusted CertificateReason = "not trusted"
)

// MaxClockSkew is how far in the future a leaf's notBefore may be and
// still count as valid now: the CA's clock and ours may differ.
const MaxClockSkew = 5 * time.Minute

// CertificateError is an issued certificate that VerifyCertificate
// refused.
type CertificateError struct {
	Reason CertificateReason
	// Detail says what was found.
	Detail string
	// Err is the underlying error, if any (signature or path building).
	Err error
}

// Error reads "acme: certificate refused: names differ from the request:
// ...".
func (e *CertificateError) Error() string {
	s := "acme: certificate refused: " + string(e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *CertificateError) Unwrap() error { return e.Err }

// Is reports whether target is e's Reason.
func (e *CertificateError) Is(target error) bool {
	r, ok := target.(CertificateReason)
	return ok && r == e.Reason
}

// VerifyCertificate checks an issued chain (leaf first, as
// FetchCertificate returns it) before it is stored or used: the leaf's
// subjectAltNames are exactly ids (DNS names case-insensitively, wildcards
// as written, IP addresses in canonical form; no other SAN), its public
// key is key (the CSR's), now is within its validity (notBefore up to
// MaxClockSkew ahead), it is not a CA certificate, each certificate's
// signature verifies with the next one's key, and, when roots is not nil,
// the chain verifies to one of them at now. It returns a
// *CertificateError saying what was wrong.
func VerifyCertificate(chain []*x509.Certificate, key crypto.PublicKey, ids []Identifier, now time.Time, roots *x509.CertPool) error {
	if len(chain) == 0 || chain[0] == nil {
		return &CertificateError{Reason: CertificateEmptyChain}
	}
	leaf := chain[0]
	if err := checkNames(leaf, ids); err != nil {
		return err
	}
	if key == nil {
		return &CertificateError{Reason: CertificateWrongKey, Detail: "no key to compare the leaf's with"}
	}
	if !samePublicKey(leaf.PublicKey, key) {
		return &CertificateError{Reason: CertificateWrongKey, Detail: fmt.Sprintf("leaf key is another %T", leaf.PublicKey)}
	}
	if leaf.NotBefore.After(now.Add(MaxClockSkew)) {
		return &CertificateError{Reason: CertificateNotYetValid, Detail: fmt.Sprintf("notBefore %s is after %s", leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if !now.Before(leaf.NotAfter) {
		return &CertificateError{Reason: CertificateExpired, Detail: fmt.Sprintf("notAfter %s is not after %s", leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return &CertificateError{Reason: CertificateIsCA, Detail: fmt.Sprintf("%s has basicConstraints CA:TRUE", certName(leaf))}
	}
	for i := 0; i+1 < len(chain); i++ {
		if chain[i+1] == nil {
			return &CertificateError{Reason: CertificateBadChain, Detail: fmt.Sprintf("certificate %d is missing", i+1)}
		}
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return &CertificateError{Reason: CertificateBadChain, Detail: fmt.Sprintf("certificate %d (%s) is not signed by certificate %d (%s)", i, certName(chain[i]), i+1, certName(chain[i+1])), Err: err}
		}
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if leaf.NotBefore.After(now) { // within the skew allowance
			opts.CurrentTime = leaf.NotBefore
		}
		if _, err := leaf.Verify(opts); err != nil {
			return &CertificateError{Reason: CertificateUntrusted, Detail: fmt.Sprintf("issuer %q", leaf.Issuer.CommonName), Err: err}
		}
	}
	return nil
}

// checkNames compares the leaf's SANs with ids as sets.
func checkNames(leaf *x509.Certificate, ids []Identifier) error {
	want := map[string]bool{}
	for _, id := range ids {
		want[identifierKey(id)] = true
	}
	got := map[string]bool{}
	var extra []string
	add := func(key, shown string) {
		got[key] = true
		if !want[key] {
			extra = append(extra, shown)
		}
	}
	for _, n := range leaf.DNSNames {
		add(identifierKey(DNS(n)), n)
	}
	for _, ip := range leaf.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			extra = append(extra, fmt.Sprintf("ip %x", []byte(ip)))
			continue
		}
		add(identifierKey(IP(a.Unmap())), a.Unmap().String())
	}
	for _, e := range leaf.EmailAddresses {
		extra = append(extra, "email "+e)
	}
	for _, u := range leaf.URIs {
		extra = append(extra, "uri "+u.String())
	}
	var missing []string
	seen := map[string]bool{}
	for _, id := range ids {
		k := identifierKey(id)
		if !got[k] && !seen[k] {
			missing = append(missing, id.Value)
		}
		seen[k] = true
	}
	if len(extra) == 0 && len(missing) == 0 {
		return nil
	}
	sans := append(slices.Clone(leaf.DNSNames), ipStrings(leaf)...)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		parts = append(parts, "not requested "+strings.Join(extra, ", "))
	}
	return &CertificateError{Reason: CertificateWrongNames, Detail: fmt.Sprintf("leaf names [%s] (%s)", strings.Join(sans, " "), strings.Join(parts, "; "))}
}

func ipStrings(c *x509.Certificate) []string {
	out := make([]string, len(c.IPAddresses))
	for i, ip := range c.IPAddresses {
		out[i] = ip.String()
	}
	return out
}

// certName names a certificate in messages: its subject CN, else its
// first subjectAltName, else its serial.
func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return "CN=" + c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return "SAN " + c.DNSNames[0]
	}
	if len(c.IPAddresses) > 0 {
		return "SAN " + c.IPAddresses[0].String()
	}
	if c.SerialNumber != nil {
		return "serial " + c.SerialNumber.Text(16)
	}
	return "no subject"
}
