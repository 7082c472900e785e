package acme

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// ErrNoAKI is returned by ARICertID for a certificate without an
// Authority Key Identifier.
var ErrNoAKI = errors.New("acme: certificate has no authority key identifier")

// ARICertID returns the ARI certificate identifier of cert, RFC 9773 §4.1:
// base64url(AKI keyIdentifier) "." base64url(DER serial number bytes).
// It names the certificate in renewalInfo URLs and in an order's
// "replaces" field.
func ARICertID(cert *x509.Certificate) (string, error) {
	if len(cert.AuthorityKeyId) == 0 {
		return "", ErrNoAKI
	}
	if cert.SerialNumber == nil {
		return "", errors.New("acme: certificate has no serial number")
	}
	// The DER INTEGER content octets: two's complement, minimal.
	der, err := asn1.Marshal(cert.SerialNumber)
	if err != nil {
		return "", fmt.Errorf("encoding serial number: %w", err)
	}
	var v asn1.RawValue
	if _, err := asn1.Unmarshal(der, &v); err != nil {
		return "", fmt.Errorf("encoding serial number: %w", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(cert.AuthorityKeyId) + "." + enc.EncodeToString(v.Bytes), nil
}

// GetRenewalInfo fetches the CA's suggested renewal window for cert, RFC
// 9773 §4.2 (an unauthenticated GET). RetryAfter says when to ask again.
func (c *Client) GetRenewalInfo(ctx context.Context, cert *x509.Certificate) (RenewalInfo, error) {
	id, err := ARICertID(cert)
	if err != nil {
		return RenewalInfo{}, err
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return RenewalInfo{}, err
	}
	if dir.RenewalInfo == "" {
		return RenewalInfo{}, fmt.Errorf("fetching renewal info: %w: no renewalInfo", ErrNotSupported)
	}
	r, err := c.get(ctx, strings.TrimSuffix(dir.RenewalInfo, "/")+"/"+id)
	if err != nil {
		return RenewalInfo{}, fmt.Errorf("fetching renewal info of %s: %w", id, err)
	}
	ri, err := decodeRenewalInfo(r.body)
	if err != nil {
		return RenewalInfo{}, fmt.Errorf("fetching renewal info of %s: %w", id, err)
	}
	ri.RetryAfter = r.retryAfter
	return ri, nil
}

func decodeRenewalInfo(body []byte) (RenewalInfo, error) {
	var ri RenewalInfo
	if err := decode(body, &ri); err != nil {
		return RenewalInfo{}, err
	}
	w := ri.SuggestedWindow
	if w.Start.IsZero() || w.End.IsZero() || !w.End.After(w.Start) {
		return RenewalInfo{}, fmt.Errorf("%w: bad suggested window %s .. %s", ErrMalformedResponse, w.Start, w.End)
	}
	return ri, nil
}

// RenewalTime picks a uniformly random time in the suggested window, as
// RFC 9773 §4.2 recommends so that clients spread their renewals. If the
// window ends before now, it returns now: renew at once.
func (ri RenewalInfo) RenewalTime(now time.Time) time.Time {
	start, end := ri.SuggestedWindow.Start, ri.SuggestedWindow.End
	if !end.After(now) {
		return now
	}
	if start.Before(now) {
		start = now
	}
	span := end.Sub(start)
	if span <= 0 {
		return start
	}
	return start.Add(rand.N(span))
}
