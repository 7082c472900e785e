package engine

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Relay makes a challenge answerable on every node of a fleet, so that the
// CA's validation request may land on any of them (behind a load balancer
// or round-robin DNS). The owner of a certificate presents an http-01 or
// tls-alpn-01 challenge through its own solver, then Publishes it; the
// other nodes present it through theirs. engine/fleet implements it on
// etcd. A certificate's dns-01 challenges are never relayed.
type Relay interface {
	// Publish MUST return nil only once every other live node of the
	// fleet presents ch through its own local solver; otherwise, within
	// the implementation's documented bound, an error naming the nodes
	// that did not. The CA is told to validate only after it returned nil.
	Publish(ctx context.Context, ch RelayChallenge) error
	// Withdraw has every node that presented ch clean it up. It is called
	// after every Publish, also one that failed.
	Withdraw(ctx context.Context, ch RelayChallenge) error
}

// RelayChallenge is a challenge as the owner of a certificate relays it to
// the other nodes: enough for each to present it through its own solver.
type RelayChallenge struct {
	// Cert is the certificate's name: each node presents the challenge
	// through the solver its own configuration names for the identifier.
	Cert string
	// Type is the challenge type (http-01 or tls-alpn-01).
	Type string
	// Identifier is the authorization's identifier, without "*." for a
	// wildcard, which Wildcard marks.
	Identifier acme.Identifier
	Wildcard   bool
	// Token and KeyAuthorization are the challenge's (RFC 8555 §8.1);
	// URL is the challenge's URL at the CA.
	Token, KeyAuthorization, URL string
}

// relayed reports whether a challenge of type t is relayed: those the CA
// validates by connecting to the identifier's address.
func relayed(t string) bool {
	return t == acme.ChallengeHTTP01 || t == acme.ChallengeTLSALPN01
}

// relayChallenge is the RelayChallenge of challenge c of cert.
func relayChallenge(cert string, c sdk.Challenge) RelayChallenge {
	return RelayChallenge{
		Cert: cert, Type: c.Type,
		Identifier: acme.Identifier{Type: c.Identifier.Type, Value: c.Identifier.Value},
		Wildcard:   c.Identifier.Wildcard,
		Token:      c.Token, KeyAuthorization: c.KeyAuthorization, URL: c.URL,
	}
}

// task is the acme.Task a solver presents for ch.
func (ch RelayChallenge) task() acme.Task {
	c := acme.Challenge{Type: ch.Type, Token: ch.Token, URL: ch.URL}
	return acme.Task{
		Authorization:    acme.Authorization{Identifier: ch.Identifier, Wildcard: ch.Wildcard, Challenges: []acme.Challenge{c}},
		Challenge:        c,
		KeyAuthorization: ch.KeyAuthorization,
	}
}

// Plugins are the solver plugin processes of one acmehook process, for a
// node that answers challenges other nodes relay (a fleet daemon): its
// engines (a new one on every configuration reload) and its relay present
// through the same processes, as a plugin such as standalone binds its
// ports once. An Engine made with Options.Plugins uses them and does not
// stop them; Close does.
type Plugins struct {
	ps *plugins
}

// NewPlugins returns an empty set of plugins for cfg; each is launched on
// first use.
func NewPlugins(cfg *config.Config, logger *slog.Logger) *Plugins {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Plugins{ps: newPlugins(cfg, logger)}
}

// Close stops every plugin launched.
func (p *Plugins) Close() error { return p.ps.closeAll() }

// Reconfigure makes cfg (a reloaded configuration) the one Present and
// CleanUp follow and later launches use; a plugin whose [plugins] table
// changed is stopped, to be launched again with the new one. An Engine
// made with these Plugins does this itself.
func (p *Plugins) Reconfigure(cfg *config.Config) { p.ps.reconfigure(cfg) }

// Present presents ch, relayed by another node, through the plugin this
// node's configuration names for the certificate's identifier: the plugin
// alone (its Present, and Wait when it waits for propagation), no scripts,
// no self-check.
func (p *Plugins) Present(ctx context.Context, ch RelayChallenge) error {
	hs, err := p.solver(ctx, ch)
	if err != nil {
		return err
	}
	return hs.Present(ctx, ch.task())
}

// CleanUp undoes Present.
func (p *Plugins) CleanUp(ctx context.Context, ch RelayChallenge) error {
	hs, err := p.solver(ctx, ch)
	if err != nil {
		return err
	}
	return hs.CleanUp(ctx, ch.task())
}

// solver returns the plugin-backed solver of ch's certificate and
// identifier in the current configuration.
func (p *Plugins) solver(ctx context.Context, ch RelayChallenge) (*host.Solver, error) {
	cfg := p.ps.config()
	cert := cfg.Certificate(ch.Cert)
	if cert == nil {
		return nil, fmt.Errorf("%w: %q (on this node)", ErrUnknownCertificate, ch.Cert)
	}
	id := ch.Identifier
	if ch.Wildcard {
		id.Value = "*." + id.Value
	}
	name := cert.SolverFor(id)
	pl, err := p.ps.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(pl.Info.ChallengeTypes, ch.Type) {
		return nil, fmt.Errorf("plugin %s does not solve %s (on this node)", name, ch.Type)
	}
	ps := p.ps
	return &host.Solver{Plugin: pl.Plugin, Info: pl.Info, Observe: func(method string, err error, d time.Duration) {
		ps.metrics.PluginCall(name, method, err, d)
	}}, nil
}

// config returns the configuration the plugins are launched from.
func (ps *plugins) config() *config.Config {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.cfg
}

// reconfigure makes cfg the configuration of later launches and stops
// the plugins whose [plugins] table changed (or is gone), so they are
// launched again with the new one; the others keep running.
func (ps *plugins) reconfigure(cfg *config.Config) {
	ps.mu.Lock()
	old := ps.cfg
	ps.cfg = cfg
	var stop []*pluginEntry
	for name, e := range ps.entries {
		if a, b := old.Plugins[name], cfg.Plugins[name]; b == nil || !reflect.DeepEqual(a, b) || old.Dir() != cfg.Dir() {
			stop = append(stop, e)
			delete(ps.entries, name)
		}
	}
	ps.mu.Unlock()
	for _, e := range stop {
		<-e.ready
		if e.p != nil {
			e.p.Close()
		}
	}
}
