package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// SigningAlgorithm returns the JWS algorithm used for key (RFC 8555 §6.2):
// RS256 for RSA, ES256/ES384/ES512 for ECDSA P-256/P-384/P-521 and EdDSA
// for Ed25519. Other keys give ErrUnsupportedKey: account keys must be
// *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey.
func SigningAlgorithm(key crypto.Signer) (string, error) {
	alg, err := algorithm(key)
	return string(alg), err
}

func algorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return jose.RS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", fmt.Errorf("%w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	case *ed25519.PrivateKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("%w: %T", ErrUnsupportedKey, key)
}

// joseKey returns the key in the form go-jose signs with.
func joseKey(key crypto.Signer) any {
	if k, ok := key.(*ed25519.PrivateKey); ok {
		return *k
	}
	return key
}

// publicJWK returns the public JWK of key, as embedded in "jwk" headers.
func publicJWK(key crypto.Signer) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key.Public()}
}

// signJWS returns the flattened JSON serialization of a JWS over payload,
// RFC 8555 §6.2. With kid empty the public key is embedded as "jwk",
// otherwise "kid" names the account. A nil payload is POST-as-GET (§6.3):
// the payload is the empty string. An empty nonce leaves the header out
// (for the inner JWS of a key change, §7.3.5).
func signJWS(key crypto.Signer, kid, nonce, url string, payload []byte) ([]byte, error) {
	alg, err := algorithm(key)
	if err != nil {
		return nil, err
	}
	headers := map[jose.HeaderKey]any{"url": url}
	if nonce != "" {
		headers["nonce"] = nonce
	}
	opts := &jose.SignerOptions{ExtraHeaders: headers}
	sk := jose.SigningKey{Algorithm: alg, Key: joseKey(key)}
	if kid == "" {
		opts.EmbedJWK = true
	} else {
		sk.Key = jose.JSONWebKey{Key: joseKey(key), KeyID: kid, Algorithm: string(alg)}
	}
	signer, err := jose.NewSigner(sk, opts)
	if err != nil {
		return nil, fmt.Errorf("creating JWS signer: %w", err)
	}
	if payload == nil {
		payload = []byte{}
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("signing JWS: %w", err)
	}
	return []byte(obj.FullSerialize()), nil
}

// eabAlgorithms are the MAC algorithms External Account Binding accepts.
var eabAlgorithms = map[string]jose.SignatureAlgorithm{"HS256": jose.HS256, "HS384": jose.HS384, "HS512": jose.HS512}

// signEAB returns the externalAccountBinding JWS of RFC 8555 §7.3.4: the
// account's public JWK, MACed with the CA-provided key.
func signEAB(eab *ExternalAccountBinding, accountKey crypto.Signer, url string) (json.RawMessage, error) {
	algName := eab.Algorithm
	if algName == "" {
		algName = "HS256"
	}
	alg, ok := eabAlgorithms[algName]
	if !ok {
		return nil, fmt.Errorf("acme: unsupported EAB algorithm %q", eab.Algorithm)
	}
	if eab.KeyID == "" || len(eab.Key) == 0 {
		return nil, errors.New("acme: EAB needs a key ID and a MAC key")
	}
	jwk, err := publicJWK(accountKey).MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding account JWK: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: eab.Key},
		&jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"kid": eab.KeyID, "url": url}})
	if err != nil {
		return nil, fmt.Errorf("creating EAB signer: %w", err)
	}
	obj, err := signer.Sign(jwk)
	if err != nil {
		return nil, fmt.Errorf("signing EAB: %w", err)
	}
	return json.RawMessage(obj.FullSerialize()), nil
}
