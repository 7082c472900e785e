package standalone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// HTTP01Server answers http-01 challenges, RFC 8555 §8.3: a GET for
// /.well-known/acme-challenge/TOKEN returns the key authorization of every
// token added with Add, whatever the Host header. The zero value listens on
// ":80"; set the exported fields before Start.
type HTTP01Server struct {
	// ListenAddrs are the "host:port" addresses to listen on; empty means
	// ":80" (IPv4 and IPv6 where the host has both).
	ListenAddrs []string
	// Fallback serves every request that is not for a current challenge,
	// for example a site's own handler. Nil answers 404 Not Found.
	Fallback http.Handler
	// Logger receives one Debug record per request; nil discards.
	Logger *slog.Logger

	mu        sync.RWMutex
	resources map[string]string // token -> key authorization
	srv       *http.Server
	lns       []net.Listener
	wg        sync.WaitGroup
}

// Add serves keyAuth for token until Remove(token); adding a token again
// replaces its key authorization. The token must be valid base64url
// (acme.ValidateToken) and keyAuth must be token + "." + a thumbprint, so a
// mix-up of the two is caught here rather than by the CA.
func (s *HTTP01Server) Add(token, keyAuth string) error {
	if err := acme.ValidateToken(token); err != nil {
		return fmt.Errorf("adding http-01 resource: %w", err)
	}
	if !strings.HasPrefix(keyAuth, token+".") || len(keyAuth) == len(token)+1 {
		return fmt.Errorf("adding http-01 resource: key authorization is not %s.<thumbprint>", token)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resources == nil {
		s.resources = map[string]string{}
	}
	s.resources[token] = keyAuth
	return nil
}

// Remove stops serving token. Removing an unknown token does nothing.
func (s *HTTP01Server) Remove(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.resources, token)
}

// Start binds every listen address, all or none, and serves in the
// background until Shutdown; ctx bounds the binding only.
func (s *HTTP01Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return ErrStarted
	}
	addrs := s.ListenAddrs
	if len(addrs) == 0 {
		addrs = []string{":80"}
	}
	lns, err := listenAll(ctx, addrs)
	if err != nil {
		return fmt.Errorf("starting http-01 server: %w", err)
	}
	log := orDiscard(s.Logger)
	s.lns = lns
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	for _, ln := range lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http-01 server stopped", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	log.Info("http-01 server listening", "addrs", fmt.Sprint(addrsOf(lns)))
	return nil
}

// Addrs returns the addresses the server listens on (with the ports chosen
// for ":0"), or nil before Start.
func (s *HTTP01Server) Addrs() []net.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return addrsOf(s.lns)
}

// Shutdown stops accepting connections, frees the listen addresses and waits
// for requests in flight until ctx is done, then closes what is left.
func (s *HTTP01Server) Shutdown(ctx context.Context) error {
	s.mu.RLock()
	srv := s.srv
	s.mu.RUnlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("shutting down http-01 server: %w", err)
	}
	return nil
}

func (s *HTTP01Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	log := orDiscard(s.Logger)
	if token, ok := strings.CutPrefix(r.URL.Path, acme.HTTP01PathPrefix); ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.mu.RLock()
		keyAuth, found := s.resources[token]
		s.mu.RUnlock()
		if found {
			log.Debug("http-01 request answered", "host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				io.WriteString(w, keyAuth)
			}
			return
		}
	}
	log.Debug("http-01 request not for a current challenge", "host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr, "fallback", s.Fallback != nil)
	if s.Fallback != nil {
		s.Fallback.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}
