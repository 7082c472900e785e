// Package standalone runs the servers a host needs to answer ACME
// challenges by itself, without a web server of its own: an http-01 server
// (RFC 8555 §8.3) and a tls-alpn-01 server (RFC 8737). It is the counterpart
// of acme-python's acme.standalone.
//
// Each server serves any number of challenges at once; challenges are added
// and removed while it runs, from any goroutine. A server listens on every
// address in its ListenAddrs; an address with an empty host, such as ":80",
// is one dual-stack socket that accepts IPv4 and IPv6 where the host has
// both. Start binds the addresses, Shutdown stops the server and frees them.
//
//	srv := &standalone.HTTP01Server{ListenAddrs: []string{":80"}}
//	if err := srv.Start(ctx); err != nil { ... }
//	defer srv.Shutdown(context.Background())
//	srv.Add(token, keyAuth)
package standalone

import (
	"context"
	"errors"
	"log/slog"
	"net"
)

// ErrStarted is returned by Start on a server that was already started.
var ErrStarted = errors.New("standalone: server already started")

// listenAll binds every address, or none: on a failure the listeners bound
// so far are closed.
func listenAll(ctx context.Context, addrs []string) ([]net.Listener, error) {
	var lc net.ListenConfig
	var lns []net.Listener
	for _, addr := range addrs {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			closeAll(lns)
			return nil, err // "listen tcp <addr>: …"
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func addrsOf(lns []net.Listener) []net.Addr {
	out := make([]net.Addr, len(lns))
	for i, ln := range lns {
		out[i] = ln.Addr()
	}
	return out
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
