package standalone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// handshakeTimeout bounds one tls-alpn-01 handshake.
const handshakeTimeout = 10 * time.Second

// TLSALPN01Server answers tls-alpn-01 challenges, RFC 8737: it completes a
// TLS handshake only with clients that offer the ALPN protocol "acme-tls/1",
// presents the challenge certificate of the identifier named by the SNI
// (for an ip identifier its reverse-DNS name, RFC 8738 §6), and then closes
// the connection. The zero value listens on ":443"; set the exported fields
// before Start.
type TLSALPN01Server struct {
	// ListenAddrs are the "host:port" addresses to listen on; empty means
	// ":443" (IPv4 and IPv6 where the host has both).
	ListenAddrs []string
	// Logger receives one Debug record per handshake; nil discards.
	Logger *slog.Logger

	mu     sync.RWMutex
	certs  map[string]*tls.Certificate // by server name
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Add serves the RFC 8737 challenge certificate for id and keyAuth
// (acme.TLSALPN01ChallengeCert) until Remove(id); adding an identifier
// again replaces its certificate.
func (s *TLSALPN01Server) Add(id acme.Identifier, keyAuth string) error {
	cert, err := acme.TLSALPN01ChallengeCert(id, keyAuth)
	if err != nil {
		return fmt.Errorf("adding tls-alpn-01 certificate for %s: %w", id, err)
	}
	return s.AddCertificate(id, cert)
}

// AddCertificate serves cert for id as it is, until Remove(id): for a
// certificate built elsewhere.
func (s *TLSALPN01Server) AddCertificate(id acme.Identifier, cert tls.Certificate) error {
	name, err := acme.TLSALPN01ServerName(id)
	if err != nil {
		return fmt.Errorf("adding tls-alpn-01 certificate: %w", err)
	}
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return fmt.Errorf("adding tls-alpn-01 certificate for %s: certificate or key missing", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.certs == nil {
		s.certs = map[string]*tls.Certificate{}
	}
	s.certs[name] = &cert
	return nil
}

// Remove stops serving id. Removing an unknown identifier does nothing.
func (s *TLSALPN01Server) Remove(id acme.Identifier) {
	name, err := acme.TLSALPN01ServerName(id)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.certs, name)
}

// Start binds every listen address, all or none, and serves in the
// background until Shutdown; ctx bounds the binding only.
func (s *TLSALPN01Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lns != nil || s.closed {
		return ErrStarted
	}
	addrs := s.ListenAddrs
	if len(addrs) == 0 {
		addrs = []string{":443"}
	}
	lns, err := listenAll(ctx, addrs)
	if err != nil {
		return fmt.Errorf("starting tls-alpn-01 server: %w", err)
	}
	s.lns = lns
	s.conns = map[net.Conn]struct{}{}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{acme.ALPNProto},
		GetCertificate: s.getCertificate,
	}
	for _, ln := range lns {
		s.wg.Add(1)
		go s.serve(ln, cfg)
	}
	orDiscard(s.Logger).Info("tls-alpn-01 server listening", "addrs", fmt.Sprint(addrsOf(lns)))
	return nil
}

// Addrs returns the addresses the server listens on (with the ports chosen
// for ":0"), or nil before Start.
func (s *TLSALPN01Server) Addrs() []net.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return addrsOf(s.lns)
}

// Shutdown stops accepting connections, frees the listen addresses and waits
// for handshakes in flight until ctx is done, then closes what is left.
func (s *TLSALPN01Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.lns == nil {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	closeAll(s.lns)
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return fmt.Errorf("shutting down tls-alpn-01 server: %w", ctx.Err())
	}
}

func (s *TLSALPN01Server) serve(ln net.Listener, cfg *tls.Config) {
	defer s.wg.Done()
	log := orDiscard(s.Logger)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Error("tls-alpn-01 accept", "addr", ln.Addr().String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handshake(conn, cfg)
	}
}

// handshake completes one tls-alpn-01 handshake and closes the connection:
// after it the client must not send anything (RFC 8737 §3).
func (s *TLSALPN01Server) handshake(conn net.Conn, cfg *tls.Config) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	tc := tls.Server(conn, cfg)
	err := tc.HandshakeContext(ctx)
	orDiscard(s.Logger).Debug("tls-alpn-01 handshake", "remote", conn.RemoteAddr().String(), "server_name", tc.ConnectionState().ServerName, "err", err)
	if err == nil {
		tc.Close()
	}
}

func (s *TLSALPN01Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !slices.Contains(hello.SupportedProtos, acme.ALPNProto) {
		return nil, fmt.Errorf("standalone: client did not offer ALPN %s", acme.ALPNProto)
	}
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	s.mu.RLock()
	cert := s.certs[name]
	s.mu.RUnlock()
	if cert == nil {
		return nil, fmt.Errorf("standalone: no tls-alpn-01 challenge for server name %q", name)
	}
	return cert, nil
}
