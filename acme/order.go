package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ErrCertKeyIsAccountKey is returned by FinalizeOrder when the CSR's key
// is the account key, which RFC 8555 §11.1 forbids.
var ErrCertKeyIsAccountKey = errors.New("acme: certificate key must differ from the account key")

// NewOrder asks for a certificate for order.Identifiers (dns and ip,
// RFC 8738; wildcards as "*.example.com"), with the optional NotBefore,
// NotAfter, Profile and Replaces (RFC 9773 §5) fields. RFC 8555 §7.4.
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
// is returned with an error wrapping its *Problem. It gives up when ctx
// is done, returning the last state seen.
func (c *Client) WaitOrder(ctx context.Context, acct Account, url string) (Order, error) {
	var o Order
	err := c.poll(ctx, func() (bool, time.Duration, error) {
		var err error
		if o, err = c.GetOrder(ctx, acct, url); err != nil {
			return false, 0, err
		}
		switch o.Status {
		case StatusReady, StatusValid:
			return true, 0, nil
		case StatusPending, StatusProcessing:
			return false, o.RetryAfter, nil
		}
		return true, 0, orderError(o)
	})
	if err != nil {
		return o, fmt.Errorf("waiting for order %s: %w", url, err)
	}
	return o, nil
}

func orderError(o Order) error {
	if o.Error != nil {
		return fmt.Errorf("order is %s: %w", o.Status, o.Error)
	}
	return fmt.Errorf("order is %s", o.Status)
}

// FinalizeOrder sends the CSR (DER) to the order's finalize URL, RFC 8555
// §7.4, and polls until the certificate is issued. It refuses a CSR whose
// key is the account key. The returned order is valid and names the
// certificate URL.
func (c *Client) FinalizeOrder(ctx context.Context, acct Account, order Order, csrDER []byte) (Order, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Order{}, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return Order{}, fmt.Errorf("finalizing order %s: parsing CSR: %w", order.URL, err)
	}
	if samePublicKey(csr.PublicKey, acct.Key.Public()) {
		return Order{}, fmt.Errorf("finalizing order %s: %w", order.URL, ErrCertKeyIsAccountKey)
	}
	if order.Finalize == "" {
		return Order{}, fmt.Errorf("finalizing order %s: %w: no finalize URL", order.URL, ErrMalformedResponse)
	}
	req := struct {
		CSR string `json:"csr"`
	}{base64.RawURLEncoding.EncodeToString(csrDER)}
	o, err := c.orderRequest(ctx, s, order.Finalize, req)
	if err != nil {
		return Order{}, fmt.Errorf("finalizing order %s: %w", order.URL, err)
	}
	if o.URL == "" {
		o.URL = order.URL
	}
	switch o.Status {
	case StatusValid:
		return issued(o)
	case StatusProcessing, StatusReady:
	default:
		return o, fmt.Errorf("finalizing order %s: %w", order.URL, orderError(o))
	}
	url := o.URL
	err = c.poll(ctx, func() (bool, time.Duration, error) {
		var err error
		if o, err = c.GetOrder(ctx, acct, url); err != nil {
			return false, 0, err
		}
		switch o.Status {
		case StatusValid:
			return true, 0, nil
		case StatusProcessing, StatusReady:
			return false, o.RetryAfter, nil
		}
		return true, 0, orderError(o)
	}, o.RetryAfter)
	if err != nil {
		return o, fmt.Errorf("finalizing order %s: %w", url, err)
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

func (c *Client) orderRequest(ctx context.Context, s signer, url string, req any) (Order, error) {
	var o Order
	r, err := c.postJSON(ctx, s, url, req, &o)
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

// poll calls check after a backoff until it reports done or fails. The
// first wait is first[0] if given and non-zero (a Retry-After), otherwise
// PollInterval.
func (c *Client) poll(ctx context.Context, check func() (done bool, retryAfter time.Duration, err error), first ...time.Duration) error {
	interval := c.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	maxInterval := c.MaxPollInterval
	if maxInterval <= 0 {
		maxInterval = DefaultMaxPollInterval
	}
	wait := interval
	if len(first) > 0 && first[0] > 0 {
		wait = first[0]
	}
	for {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			// Waiting would outlive the caller: give up now, not at the deadline.
			return fmt.Errorf("next poll in %s is past the deadline: %w", wait.Round(time.Millisecond), context.DeadlineExceeded)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		done, retryAfter, err := check()
		if done || err != nil {
			return err
		}
		interval = min(interval*2, maxInterval)
		wait = interval
		if retryAfter > 0 {
			wait = retryAfter
		}
	}
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
	r, err := c.post(ctx, s, url, nil, "application/pem-certificate-chain")
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
