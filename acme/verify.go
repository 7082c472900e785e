package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VerifyReason says why a challenge self-check failed. It is an error
// itself, so errors.Is(err, acme.VerifyWrongBody) matches a *VerifyError
// with that reason.
type VerifyReason string

// Error returns the reason.
func (r VerifyReason) Error() string { return string(r) }

// Reasons a self-check fails.
const (
	// VerifyTimeout: the check did not finish within its timeout.
	VerifyTimeout VerifyReason = "timeout"
	// VerifyUnreachable: no connection to the server (refused, no route).
	VerifyUnreachable VerifyReason = "unreachable"

	// VerifyHTTPStatus: the http-01 resource answered with a status other than 200.
	VerifyHTTPStatus VerifyReason = "unexpected http status"
	// VerifyWrongBody: the http-01 resource is not the key authorization.
	VerifyWrongBody VerifyReason = "wrong body"
	// VerifyBodyTooLarge: the http-01 resource exceeds MaxHTTP01Body.
	VerifyBodyTooLarge VerifyReason = "body too large"
	// VerifyBadRedirect: a redirect to a scheme other than http/https or
	// to a port a CA does not follow.
	VerifyBadRedirect VerifyReason = "bad redirect"
	// VerifyTooManyRedirects: more than MaxHTTP01Redirects redirects.
	VerifyTooManyRedirects VerifyReason = "too many redirects"

	// VerifyNoRecord: no TXT record at the dns-01 name.
	VerifyNoRecord VerifyReason = "no TXT record"
	// VerifyWrongRecord: TXT records exist, none has the expected value.
	VerifyWrongRecord VerifyReason = "wrong TXT record"
	// VerifyDNSFailure: the resolver failed (SERVFAIL, refused, malformed).
	VerifyDNSFailure VerifyReason = "dns failure"

	// VerifyHandshake: the TLS handshake failed.
	VerifyHandshake VerifyReason = "tls handshake failed"
	// VerifyNoALPN: the server did not negotiate ALPN acme-tls/1.
	VerifyNoALPN VerifyReason = "acme-tls/1 not negotiated"
	// VerifyNoExtension: the certificate lacks the acmeIdentifier extension.
	VerifyNoExtension VerifyReason = "no acmeIdentifier extension"
	// VerifyNotCritical: the acmeIdentifier extension is not critical.
	VerifyNotCritical VerifyReason = "acmeIdentifier extension not critical"
	// VerifyMalformedExtension: the extension is not a DER OCTET STRING of
	// a SHA-256 digest, or appears more than once.
	VerifyMalformedExtension VerifyReason = "malformed acmeIdentifier extension"
	// VerifyWrongDigest: the extension holds a digest of another key
	// authorization.
	VerifyWrongDigest VerifyReason = "wrong acmeIdentifier digest"
	// VerifyWrongSAN: the certificate's subjectAltNames are not exactly
	// the identifier.
	VerifyWrongSAN VerifyReason = "wrong subjectAltName"

	// VerifyInvalidToken: the token is not valid base64url (ErrInvalidToken).
	VerifyInvalidToken VerifyReason = "invalid token"
	// VerifyWrongToken: the key authorization is for another token.
	VerifyWrongToken VerifyReason = "key authorization for another token"
	// VerifyWrongThumbprint: the key authorization is for another account key.
	VerifyWrongThumbprint VerifyReason = "key authorization for another account key"
)

// VerifyError is a failed challenge self-check.
type VerifyError struct {
	// Challenge is the challenge type, or "" for a key authorization check.
	Challenge string
	// Target is what was checked: a URL, a DNS name at a resolver, an
	// address with its server name.
	Target string
	Reason VerifyReason
	// Detail adds what was found, for example the start of a wrong body.
	Detail string
	// Err is the underlying error, if any.
	Err error
}

// Error describes the failed check: challenge, target, reason, detail and
// underlying error.
func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString("acme: ")
	if e.Challenge != "" {
		b.WriteString(e.Challenge + " ")
	}
	b.WriteString("self-check")
	if e.Target != "" {
		b.WriteString(" of " + e.Target)
	}
	b.WriteString(": " + string(e.Reason))
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *VerifyError) Unwrap() error { return e.Err }

// Is reports whether target is e's Reason.
func (e *VerifyError) Is(target error) bool {
	r, ok := target.(VerifyReason)
	return ok && r == e.Reason
}

// Limits of the http-01 self-check, as a CA applies them.
const (
	// MaxHTTP01Redirects is the number of redirects followed.
	MaxHTTP01Redirects = 10
	// MaxHTTP01Body is the largest http-01 response body accepted.
	MaxHTTP01Body = 8 << 10
	// DefaultVerifyTimeout bounds one self-check when Verifier.Timeout is zero.
	DefaultVerifyTimeout = 10 * time.Second
)

// Verifier checks a challenge from the outside, the way a CA's validation
// authority would, before the client answers it (acme-python's
// simple_verify, probe_cert and verify_cert). A failed check costs nothing;
// a failed validation invalidates the authorization. The zero value checks
// the standard ports through the system resolver.
type Verifier struct {
	// Resolvers are the DNS servers ("host:port") every lookup goes to:
	// dns-01 TXT records are checked at each of them, names to connect to
	// for http-01 and tls-alpn-01 are resolved through the first. Empty
	// means the system resolver.
	Resolvers []string
	// HTTPPort is where http-01 is checked, 80 if zero. TLSPort is where
	// tls-alpn-01 is checked, 443 if zero. A CA may be configured with
	// others (Pebble's httpPort and tlsPort).
	HTTPPort, TLSPort int
	// Timeout bounds each check within the caller's context;
	// DefaultVerifyTimeout if zero.
	Timeout time.Duration
}

func (v *Verifier) httpPort() int { return portOr(v.HTTPPort, 80) }
func (v *Verifier) tlsPort() int  { return portOr(v.TLSPort, 443) }

func portOr(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}

func (v *Verifier) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	t := v.Timeout
	if t <= 0 {
		t = DefaultVerifyTimeout
	}
	return context.WithTimeout(ctx, t)
}

// resolverAt returns a resolver that sends every query to addr.
func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// nameResolver makes a DNS error in err name the resolver that was
// asked, addr or else the first of the Resolvers: the Go resolver reports
// the server of /etc/resolv.conf it meant to ask even when Dial sent the
// query elsewhere. Errors of the system resolver are left as they are.
func (v *Verifier) nameResolver(err error, addr string) error {
	if addr == "" && len(v.Resolvers) > 0 {
		addr = v.Resolvers[0]
	}
	var de *net.DNSError
	if addr != "" && addr != systemResolver && errors.As(err, &de) {
		de.Server = addr
	}
	return err
}

// systemResolver names the system resolver in DNS01's targets.
const systemResolver = "system resolver"

func (v *Verifier) dialer() *net.Dialer {
	d := &net.Dialer{}
	if len(v.Resolvers) > 0 {
		d.Resolver = resolverAt(v.Resolvers[0])
	}
	return d
}

// hostOf returns the host to connect to for a dns or ip identifier.
func hostOf(id Identifier) (string, error) {
	switch id.Type {
	case IdentifierDNS:
		name := strings.TrimSuffix(id.Value, ".")
		if id.Wildcard() || !validHostName(name) {
			return "", fmt.Errorf("acme: cannot connect to %q", id.Value)
		}
		return name, nil
	case IdentifierIP:
		a, err := netip.ParseAddr(id.Value)
		if err != nil {
			return "", fmt.Errorf("parsing ip identifier: %w", err)
		}
		return a.Unmap().String(), nil
	default:
		return "", fmt.Errorf("acme: identifier type %q cannot be checked", id.Type)
	}
}

// netReason classifies a connection or lookup error.
func netReason(err error, otherwise VerifyReason) VerifyReason {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return VerifyTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return VerifyUnreachable
	}
	return otherwise
}

// HTTP01 fetches http://IDENTIFIER:HTTPPort/.well-known/acme-challenge/TOKEN
// and checks that the body is keyAuth, ignoring trailing whitespace
// (RFC 8555 §8.3). Like a CA it follows up to MaxHTTP01Redirects redirects
// to http or https URLs on port 80, 443, HTTPPort or TLSPort, does not
// check the certificate of an https redirect target, and reads at most
// MaxHTTP01Body bytes. It returns a *VerifyError when the check fails.
func (v *Verifier) HTTP01(ctx context.Context, id Identifier, token, keyAuth string) error {
	path, err := HTTP01ChallengePath(token)
	if err != nil {
		return &VerifyError{Challenge: ChallengeHTTP01, Reason: VerifyInvalidToken, Err: err}
	}
	host, err := hostOf(id)
	if err != nil {
		return fmt.Errorf("checking http-01: %w", err)
	}
	target := "http://" + net.JoinHostPort(host, strconv.Itoa(v.httpPort())) + path
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	allowedPorts := map[string]bool{"80": true, "443": true, strconv.Itoa(v.httpPort()): true, strconv.Itoa(v.tlsPort()): true}
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       v.dialer().DialContext,
		DisableKeepAlives: true,
		// A CA follows a redirect to https without judging the
		// certificate (Let's Encrypt and Pebble do the same): what is
		// checked is the content, not the TLS setup.
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true},
		MaxResponseHeaderBytes: 16 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > MaxHTTP01Redirects {
				return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyTooManyRedirects, Detail: fmt.Sprintf("more than %d", MaxHTTP01Redirects)}
			}
			u := req.URL
			if u.Scheme != "http" && u.Scheme != "https" {
				return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyBadRedirect, Detail: fmt.Sprintf("to scheme %q", u.Scheme)}
			}
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
			}
			if !allowedPorts[port] {
				return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyBadRedirect, Detail: fmt.Sprintf("to port %s", port)}
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("checking http-01: %w", err)
	}
	req.Header.Set("User-Agent", "acmehook-self-check")
	resp, err := client.Do(req)
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return ve
		}
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("checking http-01 at %s: %w", target, err)
		}
		return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: netReason(err, VerifyUnreachable), Err: v.nameResolver(err, "")}
	}
	defer resp.Body.Close()
	if final := resp.Request.URL.String(); final != target {
		target += " (redirected to " + final + ")"
	}
	if resp.StatusCode != http.StatusOK {
		return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyHTTPStatus, Detail: resp.Status}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxHTTP01Body+1))
	if err != nil {
		return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: netReason(err, VerifyUnreachable), Detail: "reading body", Err: err}
	}
	if len(body) > MaxHTTP01Body {
		return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyBodyTooLarge, Detail: fmt.Sprintf("more than %d bytes", MaxHTTP01Body)}
	}
	if got := strings.TrimRight(string(body), " \t\r\n"); got != keyAuth {
		return &VerifyError{Challenge: ChallengeHTTP01, Target: target, Reason: VerifyWrongBody, Detail: "got " + quoteStart(got)}
	}
	return nil
}

// quoteStart quotes the first 64 bytes of s.
func quoteStart(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// DNS01 looks up the TXT records at DNS01TXTRecordName(domain) at each of
// the Resolvers (or the system resolver) and checks that every one of them
// serves DNS01TXTRecord(keyAuth), RFC 8555 §8.4. It returns a *VerifyError
// naming the first resolver that does not.
func (v *Verifier) DNS01(ctx context.Context, domain, keyAuth string) error {
	name := strings.TrimSuffix(DNS01TXTRecordName(domain), ".") + "."
	want := DNS01TXTRecord(keyAuth)
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()

	resolvers := map[string]*net.Resolver{}
	order := v.Resolvers
	for _, addr := range order {
		resolvers[addr] = resolverAt(addr)
	}
	if len(order) == 0 {
		order = []string{systemResolver}
		resolvers[order[0]] = net.DefaultResolver
	}
	for _, addr := range order {
		target := name + " at " + addr
		txts, err := resolvers[addr].LookupTXT(ctx, name)
		if err != nil && errors.Is(err, context.Canceled) {
			return fmt.Errorf("checking dns-01 %s: %w", target, err)
		}
		if err != nil {
			var de *net.DNSError
			reason := netReason(err, VerifyDNSFailure)
			// An empty answer without the authoritative or
			// recursion-available flag (a bare test server's answer) is a
			// "lame referral" to the Go resolver: no record either.
			if errors.As(err, &de) && (de.IsNotFound || de.Err == "lame referral") {
				reason = VerifyNoRecord
			}
			return &VerifyError{Challenge: ChallengeDNS01, Target: target, Reason: reason, Err: v.nameResolver(err, addr)}
		}
		found := false
		for _, t := range txts {
			if subtle.ConstantTimeCompare([]byte(t), []byte(want)) == 1 {
				found = true
				break
			}
		}
		if !found {
			if len(txts) == 0 {
				return &VerifyError{Challenge: ChallengeDNS01, Target: target, Reason: VerifyNoRecord}
			}
			return &VerifyError{Challenge: ChallengeDNS01, Target: target, Reason: VerifyWrongRecord, Detail: fmt.Sprintf("%d record(s), none is the expected value, first %s", len(txts), quoteStart(txts[0]))}
		}
	}
	return nil
}

// ProbeTLSALPN01 connects to IDENTIFIER:TLSPort as a CA would for
// tls-alpn-01, RFC 8737 §3: SNI TLSALPN01ServerName(id), ALPN acme-tls/1
// only, no certificate validation. It returns the certificate the server
// presents, or a *VerifyError (VerifyNoALPN when acme-tls/1 was not
// negotiated).
func (v *Verifier) ProbeTLSALPN01(ctx context.Context, id Identifier) (*x509.Certificate, error) {
	sni, err := TLSALPN01ServerName(id)
	if err != nil {
		return nil, fmt.Errorf("probing tls-alpn-01: %w", err)
	}
	host, err := hostOf(id)
	if err != nil {
		return nil, fmt.Errorf("probing tls-alpn-01: %w", err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(v.tlsPort()))
	target := addr + " (SNI " + sni + ")"
	ctx, cancel := v.withTimeout(ctx)
	defer cancel()
	d := &tls.Dialer{
		NetDialer: v.dialer(),
		Config: &tls.Config{
			ServerName: sni,
			NextProtos: []string{ALPNProto},
			// The certificate is self-signed by design; it is checked by
			// VerifyTLSALPN01Cert, not against roots.
			InsecureSkipVerify: true,
		},
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil && errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("probing tls-alpn-01 at %s: %w", target, err)
	}
	if err != nil {
		reason := netReason(err, VerifyHandshake)
		if strings.Contains(err.Error(), "no application protocol") {
			reason = VerifyNoALPN
		}
		return nil, &VerifyError{Challenge: ChallengeTLSALPN01, Target: target, Reason: reason, Err: v.nameResolver(err, "")}
	}
	defer conn.Close()
	cs := conn.(*tls.Conn).ConnectionState()
	if cs.NegotiatedProtocol != ALPNProto {
		return nil, &VerifyError{Challenge: ChallengeTLSALPN01, Target: target, Reason: VerifyNoALPN, Detail: fmt.Sprintf("negotiated %q", cs.NegotiatedProtocol)}
	}
	if len(cs.PeerCertificates) == 0 {
		return nil, &VerifyError{Challenge: ChallengeTLSALPN01, Target: target, Reason: VerifyHandshake, Detail: "no certificate"}
	}
	return cs.PeerCertificates[0], nil
}

// TLSALPN01 probes the tls-alpn-01 endpoint of id (ProbeTLSALPN01) and
// verifies the certificate it presents (VerifyTLSALPN01Cert).
func (v *Verifier) TLSALPN01(ctx context.Context, id Identifier, keyAuth string) error {
	cert, err := v.ProbeTLSALPN01(ctx, id)
	if err != nil {
		return err
	}
	return VerifyTLSALPN01Cert(cert, id, keyAuth)
}

// VerifyTLSALPN01Cert checks a tls-alpn-01 certificate as RFC 8737 §3
// requires: exactly one subjectAltName, equal to the identifier (a dNSName,
// or an iPAddress for an ip identifier, RFC 8738 §6), and exactly one
// id-pe-acmeIdentifier extension, critical, holding the DER OCTET STRING of
// the SHA-256 digest of keyAuth. It returns a *VerifyError when it fails.
func VerifyTLSALPN01Cert(cert *x509.Certificate, id Identifier, keyAuth string) error {
	if cert == nil {
		return fmt.Errorf("verifying tls-alpn-01 certificate for %s: no certificate", id)
	}
	fail := func(r VerifyReason, detail string) error {
		return &VerifyError{Challenge: ChallengeTLSALPN01, Target: id.Value, Reason: r, Detail: detail}
	}
	sans := len(cert.DNSNames) + len(cert.IPAddresses) + len(cert.EmailAddresses) + len(cert.URIs)
	var sanOK bool
	switch id.Type {
	case IdentifierDNS:
		sanOK = sans == 1 && len(cert.DNSNames) == 1 && strings.EqualFold(cert.DNSNames[0], strings.TrimSuffix(id.Value, "."))
	case IdentifierIP:
		want, err := netip.ParseAddr(id.Value)
		if err != nil {
			return fmt.Errorf("verifying tls-alpn-01 certificate: parsing ip identifier: %w", err)
		}
		if sans == 1 && len(cert.IPAddresses) == 1 {
			got, ok := netip.AddrFromSlice(cert.IPAddresses[0])
			sanOK = ok && got.Unmap() == want.Unmap()
		}
	default:
		return fmt.Errorf("acme: identifier type %q cannot use tls-alpn-01", id.Type)
	}
	if !sanOK {
		return fail(VerifyWrongSAN, fmt.Sprintf("dns %q, ip %v, %d SAN(s) in all", cert.DNSNames, cert.IPAddresses, sans))
	}

	var ext []byte
	var found, critical bool
	for _, e := range cert.Extensions {
		if !e.Id.Equal(oidACMEIdentifier) {
			continue
		}
		if found {
			return fail(VerifyMalformedExtension, "more than one")
		}
		ext, found, critical = e.Value, true, e.Critical
	}
	if !found {
		return fail(VerifyNoExtension, "")
	}
	if !critical {
		return fail(VerifyNotCritical, "")
	}
	var digest []byte
	rest, err := asn1.Unmarshal(ext, &digest)
	if err != nil || len(rest) != 0 || len(digest) != sha256.Size {
		return fail(VerifyMalformedExtension, fmt.Sprintf("value %x", ext))
	}
	want := sha256.Sum256([]byte(keyAuth))
	if subtle.ConstantTimeCompare(digest, want[:]) != 1 {
		return fail(VerifyWrongDigest, "")
	}
	return nil
}

// VerifyKeyAuthorization checks that keyAuth is the key authorization of
// token for accountKey, RFC 8555 §8.1: token "." thumbprint. It returns a
// *VerifyError with VerifyInvalidToken, VerifyWrongToken or
// VerifyWrongThumbprint.
func VerifyKeyAuthorization(keyAuth, token string, accountKey crypto.PublicKey) error {
	if err := ValidateToken(token); err != nil {
		return &VerifyError{Reason: VerifyInvalidToken, Err: err}
	}
	gotToken, gotThumb, ok := strings.Cut(keyAuth, ".")
	if !ok || gotToken != token {
		return &VerifyError{Reason: VerifyWrongToken}
	}
	thumb, err := JWKThumbprint(accountKey)
	if err != nil {
		return fmt.Errorf("verifying key authorization: %w", err)
	}
	if !bytes.Equal([]byte(gotThumb), []byte(thumb)) {
		return &VerifyError{Reason: VerifyWrongThumbprint}
	}
	return nil
}
