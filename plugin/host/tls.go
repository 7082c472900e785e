package host

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// hostCert is the host's certificate for mutual TLS with its plugins,
// made once per process. go-plugin's AutoMTLS would make a P-521 key for
// every launch (about 17 ms of CPU); a P-256 key once is as good for a
// loopback connection between two processes of the same user, and a plugin
// sees no difference: it gets the certificate in PLUGIN_CLIENT_CERT, as
// with AutoMTLS, and answers with its own in the handshake line.
var hostCert = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	// The plugin trusts exactly this certificate, as the root of a pool
	// of one, so it is its own CA.
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"acmehook"}},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
})

// clientTLS returns a fresh TLS configuration for one plugin connection
// (go-plugin adds the plugin's certificate to it as the only root) and the
// PLUGIN_CLIENT_CERT environment entry that hands the plugin the host's
// certificate.
func clientTLS() (*tls.Config, string, error) {
	cert, err := hostCert()
	if err != nil {
		return nil, "", fmt.Errorf("making the host's TLS certificate: %w", err)
	}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		ServerName:   "localhost",
	}, "PLUGIN_CLIENT_CERT=" + string(pemCert), nil
}
