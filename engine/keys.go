package engine

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/acmehook/acmehook/engine/config"
)

// errNoKeyPEM is returned by parseKeyPEM for data without a PRIVATE KEY block.
var errNoKeyPEM = errors.New("engine: no PRIVATE KEY PEM block")

// generateKey makes a private key of type kt.
func generateKey(kt config.KeyType) (crypto.Signer, error) {
	switch kt {
	case config.RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case config.RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case config.RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case config.EC256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case config.EC384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("generating key: unknown key type %q", kt)
}

// keyType names the type of key as acmehook.toml does.
func keyType(key crypto.PublicKey) config.KeyType {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return config.KeyType(fmt.Sprintf("rsa%d", k.N.BitLen()))
	case *ecdsa.PublicKey:
		return config.KeyType(fmt.Sprintf("ec%d", k.Curve.Params().BitSize))
	}
	return ""
}

// marshalKeyPEM encodes key as a PKCS#8 PEM block.
func marshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKeyPEM decodes a PKCS#8 (or SEC 1 / PKCS#1) PEM private key.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errNoKeyPEM
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parsing private key: %T is not a signer", k)
		}
		return s, nil
	}
}
