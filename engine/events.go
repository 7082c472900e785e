package engine

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/luahost"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// luaHooks is the engine's wiring of the Lua host: one event.Hook per
// certificate, running its scripts, each under its script_timeout, all
// sharing the script host processes of the returned Host.
func luaHooks(cfg *config.Config, opts luahost.Options) (map[string]event.Hook, *luahost.Host) {
	base := luahost.New(opts)
	hooks := make(map[string]event.Hook, len(cfg.Certificates))
	for _, c := range cfg.Certificates {
		hooks[c.Name] = base.WithScripts(c.Scripts, c.ScriptTimeout.Duration)
	}
	return hooks, base
}

// raise hands ev to cert's hook. For a pre-event (challenge-provision) an
// error is the veto; for a post-event it lists every handler that failed.
func (e *Engine) raise(ctx context.Context, cert *config.Certificate, ev event.Event) error {
	h, ok := e.hooks[cert.Name]
	if !ok {
		return nil
	}
	return h.Handle(ctx, ev)
}

// versionFiles returns the files of version id of name, or empty paths for
// a store that keeps no files.
func (e *Engine) versionFiles(name, id string) store.VersionFiles {
	f, err := e.store.Files(name, id)
	if err != nil {
		return store.VersionFiles{}
	}
	return f
}

// eventCertificate describes version v of cert (leaf is its parsed
// certificate, nil if unknown) for an event.
func (e *Engine) eventCertificate(cert *config.Certificate, v *store.Version, leaf *x509.Certificate) event.Certificate {
	c := event.Certificate{
		Serial:    v.Info.Serial,
		NotBefore: v.Info.NotBefore,
		NotAfter:  v.Info.NotAfter,
		Profile:   v.Info.Profile,
		CertPEM:   string(v.CertPEM),
		ChainPEM:  string(v.ChainPEM),
	}
	if leaf != nil {
		c.Issuer = leaf.Issuer.String()
	}
	f := e.versionFiles(cert.Name, v.ID)
	c.CertPath, c.KeyPath, c.ChainPath, c.FullchainPath = f.Cert, f.Key, f.Chain, f.Fullchain
	return c
}

// deployEvent is the issued event for version v of cert, or the renew
// event when it replaced the certificate whose serial is prevSerial.
func (e *Engine) deployEvent(t event.Type, cert *config.Certificate, v *store.Version, leaf *x509.Certificate, prevSerial string) event.Event {
	c := e.eventCertificate(cert, v, leaf)
	if t == event.Renew {
		return event.NewRenew(cert.Name, domains(cert), c, prevSerial)
	}
	return event.NewIssued(cert.Name, domains(cert), c)
}

// failedEvent builds the failed event for err. When a certificate is
// current (a renewal failed), the event describes it too, so an alert can
// say how long the certificate in service has left.
func (e *Engine) failedEvent(ctx context.Context, cert *config.Certificate, err error) event.Event {
	var current *event.Certificate
	cur, lerr := e.store.LoadCertificate(ctx, cert.Name)
	if cur != nil && (lerr == nil || errors.Is(lerr, store.ErrKeyMovedAside)) {
		if leaf, perr := parseLeaf(cur.CertPEM); perr == nil {
			c := e.eventCertificate(cert, cur, leaf)
			if lerr != nil {
				c.KeyPath = "" // moved aside after a keyCompromise revocation
			}
			current = &c
		}
	}
	return event.NewFailed(cert.Name, domains(cert), current, err)
}

// challengeEvent builds challenge-provision or challenge-cleanup data.
func challengeEvent(t event.Type, cert *config.Certificate, ch sdk.Challenge) event.Event {
	id := ch.Identifier.Value
	if ch.Identifier.Wildcard {
		id = "*." + id
	}
	return event.NewChallenge(t, cert.Name, domains(cert), event.Challenge{
		Type:             ch.Type,
		Identifier:       id,
		Token:            ch.Token,
		KeyAuthorization: ch.KeyAuthorization,
		DNSName:          ch.DNS01RecordName,
		DNSValue:         ch.DNS01RecordValue,
	})
}

// problemOf returns the ACME problem in err's chain, or nil.
func problemOf(err error) *acme.Problem {
	var p *acme.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

func domains(cert *config.Certificate) []string {
	out := make([]string, len(cert.Identifiers))
	for i, id := range cert.Identifiers {
		out[i] = id.Value
	}
	return out
}
