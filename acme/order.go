package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrCertKeyIsAccountKey is returned by FinalizeOrder when the CSR's key
// is the account key, which RFC 8555 §11.1 forbids.
var ErrCertKeyIsAccountKey = errors.New("acme: certificate key must differ from the account key")

// NewOrder asks for a certificate for order.Identifiers (dns and ip,
// RFC 8738; wildcards as "*.example.com"), with the optional NotBefore,
// NotAfter, Profile and Replaces (RFC 9773 §5) fields. RFC 8555 §7.4.
// The order the CA creates must be for exactly those identifiers (DNS
// names compared case-insensitively, IP addresses in canonical form, in
// any order); otherwise the error wraps ErrIdentifierMismatch and the
// order is returned, so its URL can be reported.
func (c *Client) NewOrder(ctx context.Context, acct Account, order Order) (Order, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Order{}, err
	}
	if len(order.Identifiers) == 0 {
		return Order{}, errors.New("acme: creating order: no identifiers")
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return Order{}, err
	}
	req := struct {
		Identifiers []Identifier `json:"identifiers"`
		NotBefore   time.Time    `json:"notBefore,omitzero"`
		NotAfter    time.Time    `json:"notAfter,omitzero"`
		Profile     string       `json:"profile,omitempty"`
		Replaces    string       `json:"replaces,omitempty"`
	}{order.Identifiers, order.NotBefore, order.NotAfter, order.Profile, order.Replaces}
	o, err := c.orderRequest(ctx, s, dir.NewOrder, req)
	if err != nil {
		return Order{}, fmt.Errorf("creating order: %w", err)
	}
	if o.URL == "" {
		return Order{}, fmt.Errorf("creating order: %w: no order Location", ErrMalformedResponse)
	}
	if err := checkOrderIdentifiers(order.Identifiers, o.Identifiers); err != nil {
		return o, fmt.Errorf("creating order %s: %w", o.URL, err)
	}
	return o, nil
}

// GetOrder fetches an order (POST-as-GET, RFC 8555 §7.4).
func (c *Client) GetOrder(ctx context.Context, acct Account, url string) (Order, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Order{}, err
	}
	o, err := c.orderRequest(ctx, s, url, nil)
	if err != nil {
		return Order{}, fmt.Errorf("fetching order %s: %w", url, err)
	}
	return o, nil
}

// WaitOrder polls the order until it is ready, valid or invalid, RFC 8555
// §7.4: it waits Client.PollInterval first, doubling up to
// MaxPollInterval, and honours the server's Retry-After. An invalid order
// is an *OrderError wrapping its *Problem. The wait is bounded by ctx and
// by Client.PollTimeout; when the bound comes first, or a Retry-After
// would outlast it, it returns a *PollError with the last state seen (and
// that state as the order).
func (c *Client) WaitOrder(ctx context.Context, acct Account, url string) (Order, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Order{}, err
	}
	o := Order{URL: url}
	err = c.poll(ctx, pollTarget{kind: "order", url: url}, 0, func(ctx context.Context) (string, time.Duration, bool, error) {
		got, err := c.orderRequest(ctx, s, url, nil)
		if err != nil {
			return "", 0, false, fmt.Errorf("polling order %s: %w", url, err)
		}
		o = got
		switch o.Status {
		case StatusReady, StatusValid:
			return o.Status, 0, true, nil
		case StatusPending, StatusProcessing:
			return o.Status, o.RetryAfter, false, nil
		}
		return o.Status, 0, true, orderError(o, StatusReady, StatusValid)
	})
	return o, err
}

// OrderError is an order found in a state the operation cannot go on
// from: invalid (with the CA's problem), or another unexpected status.
type OrderError struct {
	// URL is the order's URL, Status the state it was found in.
	URL, Status string
	// Want are the states the operation expected.
	Want []string
	// Problem is the order's error, if the CA gave one.
	Problem *Problem
}

// Error reads "acme: order https://… is invalid: <problem>" or "acme:
// order https://… is pending, want ready or valid".
func (e *OrderError) Error() string {
	s := fmt.Sprintf("acme: order %s is %s", e.URL, e.Status)
	if e.Problem != nil {
		return s + ": " + problemText(e.Problem)
	}
	if len(e.Want) > 0 {
		s += ", want " + strings.Join(e.Want, " or ")
	}
	return s
}

// Unwrap returns the order's problem.
func (e *OrderError) Unwrap() error {
	if e.Problem == nil {
		return nil
	}
	return e.Problem
}

func orderError(o Order, want ...string) error {
	return &OrderError{URL: o.URL, Status: o.Status, Want: want, Problem: o.Error}
}

// FinalizeOrder sends the CSR (DER) to the order's finalize URL, RFC 8555
// §7.4, and polls until the certificate is issued, as WaitOrder polls. It
// refuses a CSR whose key is the account key. The returned order is valid
// and names the certificate URL. On failure the order returned is the
// last state seen (order itself if none), so its URL is never lost.
func (c *Client) FinalizeOrder(ctx context.Context, acct Account, order Order, csrDER []byte) (Order, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return order, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return order, fmt.Errorf("finalizing order %s: parsing CSR: %w", order.URL, err)
	}
	if samePublicKey(csr.PublicKey, acct.Key.Public()) {
		return order, fmt.Errorf("finalizing order %s: %w", order.URL, ErrCertKeyIsAccountKey)
	}
	if order.Finalize == "" {
		return order, fmt.Errorf("finalizing order %s: %w: no finalize URL", order.URL, ErrMalformedResponse)
	}
	req := struct {
		CSR string `json:"csr"`
	}{base64.RawURLEncoding.EncodeToString(csrDER)}
	o, err := c.orderRequest(ctx, s, order.Finalize, req)
	if err != nil {
		return order, fmt.Errorf("finalizing order %s: %w", order.URL, err)
	}
	if o.URL == "" {
		o.URL = order.URL
	}
	switch o.Status {
	case StatusValid:
		return issued(o)
	case StatusProcessing, StatusReady:
	default:
		return o, fmt.Errorf("finalizing order: %w", orderError(o, StatusProcessing, StatusValid))
	}
	url := o.URL
	err = c.poll(ctx, pollTarget{kind: "order", url: url, status: o.Status}, o.RetryAfter, func(ctx context.Context) (string, time.Duration, bool, error) {
		got, err := c.orderRequest(ctx, s, url, nil)
		if err != nil {
			return "", 0, false, fmt.Errorf("polling order %s: %w", url, err)
		}
		o = got
		switch o.Status {
		case StatusValid:
			return o.Status, 0, true, nil
		case StatusProcessing, StatusReady:
			return o.Status, o.RetryAfter, false, nil
		}
		return o.Status, 0, true, orderError(o, StatusProcessing, StatusValid)
	})
	if err != nil {
		return o, fmt.Errorf("finalizing order: %w", err)
	}
	return issued(o)
}

// issued checks that a valid order names its certificate.
func issued(o Order) (Order, error) {
	if o.Certificate == "" {
		return o, fmt.Errorf("finalizing order %s: %w: valid order without a certificate URL", o.URL, ErrMalformedResponse)
	}
	return o, nil
}

// orderRequest posts req (nil: POST-as-GET) to url. newOrder and
// finalize ride out transient refusals.
func (c *Client) orderRequest(ctx context.Context, s signer, url string, req any) (Order, error) {
	var o Order
	r, err := c.postJSON(ctx, s, url, req, &o, req != nil)
	if err != nil {
		return Order{}, err
	}
	o.URL = r.location
	if o.URL == "" && req == nil {
		o.URL = url
	}
	o.RetryAfter = r.retryAfter
	return o, nil
}

// CertificateChain is a certificate with its chain as the server sent it
// (RFC 8555 §7.4.2).
type CertificateChain struct {
	// URL is where the chain was downloaded from.
	URL string
	// PEM is the chain as served: the end-entity certificate first.
	PEM []byte
	// Certificates are the parsed certificates of PEM, in order.
	Certificates []*x509.Certificate
	// Alternates are the URLs of the same certificate with other chains
	// (Link rel="alternate").
	Alternates []string
}

// IssuerCommonName returns the issuer CN of the chain's last certificate,
// which names the root the chain leads to.
func (cc CertificateChain) IssuerCommonName() string {
	if len(cc.Certificates) == 0 {
		return ""
	}
	return cc.Certificates[len(cc.Certificates)-1].Issuer.CommonName
}

// FetchCertificate downloads the certificate chain at url (POST-as-GET,
// RFC 8555 §7.4.2) and parses it. The alternates are only listed.
func (c *Client) FetchCertificate(ctx context.Context, acct Account, url string) (CertificateChain, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return CertificateChain{}, err
	}
	r, err := c.post(ctx, s, url, nil, "application/pem-certificate-chain", false)
	if err != nil {
		return CertificateChain{}, fmt.Errorf("downloading certificate %s: %w", url, err)
	}
	certs, err := ParseChainPEM(r.body)
	if err != nil {
		return CertificateChain{}, fmt.Errorf("downloading certificate %s: %w", url, err)
	}
	return CertificateChain{URL: url, PEM: r.body, Certificates: certs, Alternates: r.links["alternate"]}, nil
}

// FetchPreferredChain downloads the certificate at url and, when issuerCN
// is not empty and the default chain does not lead to a root named
// issuerCN, the alternates one by one until one does. A chain matches
// when any of its certificates has issuer CN issuerCN. With no match the
// default chain is returned. Fetching stops at the first match, so the
// default case costs one request.
func (c *Client) FetchPreferredChain(ctx context.Context, acct Account, url, issuerCN string) (CertificateChain, error) {
	def, err := c.FetchCertificate(ctx, acct, url)
	if err != nil || issuerCN == "" || chainMatches(def, issuerCN) {
		return def, err
	}
	for _, alt := range def.Alternates {
		cc, err := c.FetchCertificate(ctx, acct, alt)
		if err != nil {
			return CertificateChain{}, err
		}
		if chainMatches(cc, issuerCN) {
			return cc, nil
		}
	}
	return def, nil
}

// PreferredChain returns the first chain in which a certificate has issuer
// CN issuerCN, or chains[0] when none has (the zero chain for none).
func PreferredChain(chains []CertificateChain, issuerCN string) CertificateChain {
	for _, cc := range chains {
		if chainMatches(cc, issuerCN) {
			return cc
		}
	}
	if len(chains) == 0 {
		return CertificateChain{}
	}
	return chains[0]
}

func chainMatches(cc CertificateChain, issuerCN string) bool {
	for _, cert := range cc.Certificates {
		if cert.Issuer.CommonName == issuerCN {
			return true
		}
	}
	return false
}

// ParseChainPEM parses a PEM certificate chain (application/pem-certificate
// -chain, RFC 8555 §9.1). It fails on anything but CERTIFICATE blocks or
// on an empty chain.
func ParseChainPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q in certificate chain", ErrMalformedResponse, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: parsing certificate: %w", ErrMalformedResponse, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: not a PEM certificate chain", ErrMalformedResponse)
	}
	return certs, nil
}
