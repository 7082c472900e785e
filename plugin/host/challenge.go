package host

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// NewChallenge derives the sdk.Challenge a plugin receives from an authorization
// and one of its challenges, for the account whose key is accountKey: the key
// authorization (RFC 8555 §8.1), the dns-01 record name and value (§8.4) and
// the tls-alpn-01 certificate and key (RFC 8737 §3), each where the
// challenge's type needs it. The token is validated first.
func NewChallenge(authz acme.Authorization, ch acme.Challenge, accountKey crypto.PublicKey) (sdk.Challenge, error) {
	keyAuth, err := acme.KeyAuthorization(ch.Token, accountKey)
	if err != nil {
		return sdk.Challenge{}, fmt.Errorf("deriving key authorization for %s: %w", authz.Identifier.Value, err)
	}
	return taskChallenge(acme.Task{Authorization: authz, Challenge: ch, KeyAuthorization: keyAuth})
}

// taskChallenge derives the sdk.Challenge of a task whose key
// authorization is known.
func taskChallenge(t acme.Task) (sdk.Challenge, error) {
	authz, ch, keyAuth := t.Authorization, t.Challenge, t.KeyAuthorization
	if err := acme.ValidateToken(ch.Token); err != nil {
		return sdk.Challenge{}, fmt.Errorf("%s challenge for %s: %w", ch.Type, authz.Identifier.Value, err)
	}
	c := sdk.Challenge{
		Type: ch.Type,
		Identifier: sdk.Identifier{
			Type:     authz.Identifier.Type,
			Value:    authz.Identifier.Value,
			Wildcard: authz.Wildcard,
		},
		Token:            ch.Token,
		KeyAuthorization: keyAuth,
		URL:              ch.URL,
	}
	switch ch.Type {
	case acme.ChallengeDNS01:
		c.DNS01RecordName = acme.DNS01TXTRecordName(authz.Identifier.Value) + "."
		c.DNS01RecordValue = acme.DNS01TXTRecord(keyAuth)
	case acme.ChallengeTLSALPN01:
		cert, err := acme.TLSALPN01ChallengeCert(authz.Identifier, keyAuth)
		if err != nil {
			return sdk.Challenge{}, fmt.Errorf("making tls-alpn-01 certificate for %s: %w", authz.Identifier.Value, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			return sdk.Challenge{}, fmt.Errorf("encoding tls-alpn-01 key for %s: %w", authz.Identifier.Value, err)
		}
		c.TLSALPN01CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		c.TLSALPN01KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	return c, nil
}
