package acme

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
)

// Revocation reason codes, RFC 5280 §5.3.1 (value 7 is unused), as sent in
// a revocation request (RFC 8555 §7.6).
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonCertificateHold      = 6
	ReasonRemoveFromCRL        = 8
	ReasonPrivilegeWithdrawn   = 9
	ReasonAACompromise         = 10
)

// RevokeCertificate revokes the certificate (DER) with the account that
// holds it or holds authorizations for all its identifiers, RFC 8555 §7.6.
func (c *Client) RevokeCertificate(ctx context.Context, acct Account, certDER []byte, reason int) error {
	s, err := accountSigner(acct)
	if err != nil {
		return err
	}
	return c.revoke(ctx, s, certDER, reason)
}

// RevokeCertificateWithKey revokes the certificate (DER) with a request
// signed by the certificate's own private key (embedded as "jwk"), RFC
// 8555 §7.6; no account is needed.
func (c *Client) RevokeCertificateWithKey(ctx context.Context, certKey crypto.Signer, certDER []byte, reason int) error {
	if certKey == nil {
		return errors.New("acme: revoking certificate: no key")
	}
	return c.revoke(ctx, signer{key: certKey}, certDER, reason)
}

func (c *Client) revoke(ctx context.Context, s signer, certDER []byte, reason int) error {
	if reason < 0 || reason == 7 || reason > ReasonAACompromise {
		return fmt.Errorf("acme: revoking certificate: invalid reason code %d", reason)
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return err
	}
	if dir.RevokeCert == "" {
		return fmt.Errorf("revoking certificate: %w: no revokeCert", ErrNotSupported)
	}
	req := struct {
		Certificate string `json:"certificate"`
		Reason      int    `json:"reason"`
	}{base64.RawURLEncoding.EncodeToString(certDER), reason}
	if _, err := c.post(ctx, s, dir.RevokeCert, req, "", false); err != nil {
		return fmt.Errorf("revoking certificate: %w", err)
	}
	return nil
}
