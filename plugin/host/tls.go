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
var hostCert = sync.OnceValues(selfSigned)

// pluginCert is a server certificate and key the host offers its plugins
// (made once per process), so that a plugin built with plugin/sdk need not
// make a P-521 key of its own at every start (go-plugin's server side of
// AutoMTLS, about 18 ms of the plugin's CPU). It reaches the plugin through
// a pipe (wire.ServerCertFD), never the environment; a plugin that does
// not read it announces its own certificate as before, and go-plugin then
// trusts that one instead.
var pluginCert = sync.OnceValues(func() (pluginTLS, error) {
	cert, err := selfSigned()
	if err != nil {
		return pluginTLS{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return pluginTLS{}, err
	}
	pemBytes := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return pluginTLS{leaf: cert.Leaf, pem: pemBytes}, nil
})

type pluginTLS struct {
	leaf *x509.Certificate
	pem  []byte // certificate and PKCS #8 key
}

// selfSigned makes a P-256 certificate for "localhost" that is its own CA
// (each side trusts exactly the other's certificate, as the root of a pool
// of one).
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
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
}

// clientTLS returns a fresh TLS configuration for one plugin connection,
// trusting the certificate offered in pluginCert (go-plugin replaces that
// root with the plugin's own certificate when the plugin announces one),
// the PLUGIN_CLIENT_CERT environment entry that hands the plugin the
// host's certificate, and the offered server certificate and key to write
// to the plugin's wire.ServerCertFD.
func clientTLS() (_ *tls.Config, certEnv string, offer []byte, _ error) {
	cert, err := hostCert()
	if err != nil {
		return nil, "", nil, fmt.Errorf("making the host's TLS certificate: %w", err)
	}
	server, err := pluginCert()
	if err != nil {
		return nil, "", nil, fmt.Errorf("making the plugins' TLS certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(server.leaf)
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		MinVersion:   tls.VersionTLS12,
		ServerName:   "localhost",
	}, "PLUGIN_CLIENT_CERT=" + string(pemCert), server.pem, nil
}
