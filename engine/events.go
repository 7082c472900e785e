package engine

import (
	"context"
	"errors"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/luahost"
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

// problemOf returns the ACME problem in err's chain, or nil.
func problemOf(err error) *acme.Problem {
	var p *acme.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}
