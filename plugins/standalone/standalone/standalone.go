// Package standalone solves http-01 (RFC 8555 §8.3) and tls-alpn-01
// (RFC 8737) challenges by running acme/standalone's servers inside the
// plugin process. The servers start when the plugin is configured, serve
// every challenge presented until it is cleaned up, and stop with the
// process.
//
// Configuration:
//
//	http_listen = [":80"]    # http-01 addresses; [] turns http-01 off
//	tls_listen  = [":443"]   # tls-alpn-01 addresses; [] turns tls-alpn-01 off
//
// An address with an empty host (":80") is one dual-stack socket.
package standalone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/acmehook/acmehook/acme"
	acmestandalone "github.com/acmehook/acmehook/acme/standalone"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Version is the plugin's version.
const Version = "1.0.0"

// shutdownTimeout bounds stopping the servers.
const shutdownTimeout = 5 * time.Second

// Config is the plugin's configuration table. A nil list means the
// default address, an empty one turns the challenge type off.
type Config struct {
	HTTPListen *[]string `json:"http_listen"`
	TLSListen  *[]string `json:"tls_listen"`
}

// Plugin describes the standalone plugin to sdk.Serve.
var Plugin = sdk.Plugin{
	Name:            "standalone",
	Version:         Version,
	ChallengeTypes:  []string{acme.ChallengeHTTP01, acme.ChallengeTLSALPN01},
	IdentifierTypes: []string{acme.IdentifierDNS, acme.IdentifierIP},
	New:             func(ctx context.Context, cfg sdk.Config) (sdk.Solver, error) { return New(ctx, cfg) },
}

// Solver is the standalone solver. Its methods are safe for concurrent use.
type Solver struct {
	log  *slog.Logger
	http *acmestandalone.HTTP01Server    // nil when http-01 is off
	tls  *acmestandalone.TLSALPN01Server // nil when tls-alpn-01 is off
}

// New starts the servers on the configured addresses.
func New(ctx context.Context, c sdk.Config) (*Solver, error) {
	var cfg Config
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	httpAddrs, tlsAddrs := []string{":80"}, []string{":443"}
	if cfg.HTTPListen != nil {
		httpAddrs = *cfg.HTTPListen
	}
	if cfg.TLSListen != nil {
		tlsAddrs = *cfg.TLSListen
	}
	if len(httpAddrs) == 0 && len(tlsAddrs) == 0 {
		return nil, errors.New("http_listen and tls_listen are both empty: nothing to serve")
	}
	s := &Solver{log: c.Log()}
	if len(httpAddrs) > 0 {
		s.http = &acmestandalone.HTTP01Server{ListenAddrs: httpAddrs, Logger: s.log}
		if err := s.http.Start(ctx); err != nil {
			return nil, err
		}
		s.log.Info("serving http-01", "addrs", fmt.Sprint(s.http.Addrs()))
	}
	if len(tlsAddrs) > 0 {
		t := &acmestandalone.TLSALPN01Server{ListenAddrs: tlsAddrs, Logger: s.log}
		if err := t.Start(ctx); err != nil {
			s.Close()
			return nil, err
		}
		s.tls = t
		s.log.Info("serving tls-alpn-01", "addrs", fmt.Sprint(t.Addrs()))
	}
	return s, nil
}

// Offers lists the challenge types the servers answer (http-01 when
// http_listen is not empty, tls-alpn-01 when tls_listen is not), so the
// host picks one of them.
func (s *Solver) Offers() []string {
	var types []string
	if s.http != nil {
		types = append(types, acme.ChallengeHTTP01)
	}
	if s.tls != nil {
		types = append(types, acme.ChallengeTLSALPN01)
	}
	return types
}

// Present serves the challenge.
func (s *Solver) Present(_ context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	c := req.Challenge
	h, t := s.http, s.tls
	id := acme.Identifier{Type: c.Identifier.Type, Value: c.Identifier.Value}
	switch c.Type {
	case acme.ChallengeHTTP01:
		if h == nil {
			return nil, errors.New("http-01 is off (http_listen is empty)")
		}
		if err := h.Add(c.Token, c.KeyAuthorization); err != nil {
			return nil, err
		}
	case acme.ChallengeTLSALPN01:
		if t == nil {
			return nil, errors.New("tls-alpn-01 is off (tls_listen is empty)")
		}
		if len(c.TLSALPN01CertPEM) == 0 {
			if err := t.Add(id, c.KeyAuthorization); err != nil {
				return nil, err
			}
			break
		}
		cert, err := tls.X509KeyPair(c.TLSALPN01CertPEM, c.TLSALPN01KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("loading tls-alpn-01 certificate: %w", err)
		}
		if err := t.AddCertificate(id, cert); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("challenge type %q not supported: standalone solves http-01 and tls-alpn-01", c.Type)
	}
	s.log.Info("serving challenge", "type", c.Type, "identifier", c.Identifier.Value)
	return &sdk.PresentResponse{}, nil
}

// CleanUp stops serving the challenge.
func (s *Solver) CleanUp(_ context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	c := req.Challenge
	h, t := s.http, s.tls
	switch {
	case c.Type == acme.ChallengeHTTP01 && h != nil:
		h.Remove(c.Token)
	case c.Type == acme.ChallengeTLSALPN01 && t != nil:
		t.Remove(acme.Identifier{Type: c.Identifier.Type, Value: c.Identifier.Value})
	}
	return &sdk.CleanUpResponse{}, nil
}

// Close stops the servers and frees their addresses.
func (s *Solver) Close() error {
	h, t := s.http, s.tls
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	if h != nil {
		errs = append(errs, h.Shutdown(ctx))
	}
	if t != nil {
		errs = append(errs, t.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping servers: %w", err)
	}
	return nil
}
