package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/luahost"
)

// ScriptTest selects what RunScriptTest fires at which script.
type ScriptTest struct {
	// Script is the path of the Lua script.
	Script string
	// Event is the event to fire.
	Event event.Type
	// Config, when set, gives the script its [lua] settings (lib_dir,
	// vars). Optional unless Cert is set.
	Config *config.Config
	// Cert names a certificate of Config: the event carries its name and
	// domains and the script runs under its script_timeout. Empty means
	// the certificate "test" for test.example.com.
	Cert string
	// Logger receives the script's log lines; nil discards.
	Logger *slog.Logger
}

// ErrNoConfig is returned by RunScriptTest for a Cert without a Config.
var ErrNoConfig = errors.New("engine: a certificate was named without a configuration")

// RunScriptTest fires a synthetic event (event.Synthetic: a throwaway
// certificate in a temporary directory, Test set) at one script, as
// `acmehook script test` does, and returns the script's error.
func RunScriptTest(ctx context.Context, t ScriptTest) error {
	if !t.Event.Valid() {
		return fmt.Errorf("unknown event %q", t.Event)
	}
	name, domains, timeout := "test", []string{"test.example.com"}, config.DefaultScriptTimeout
	opts := luahost.Options{Logger: t.Logger}
	if t.Config != nil {
		opts.LibDir, opts.Dir, opts.Vars = t.Config.Lua.LibDir, t.Config.Dir(), t.Config.Lua.RevealedVars()
	}
	if t.Cert != "" {
		if t.Config == nil {
			return ErrNoConfig
		}
		cert := t.Config.Certificate(t.Cert)
		if cert == nil {
			return fmt.Errorf("%w: %q", ErrUnknownCertificate, t.Cert)
		}
		name, domains, timeout = cert.Name, cert.Domains, cert.ScriptTimeout.Duration
	}
	dir, err := os.MkdirTemp("", "acmehook-script-test-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ev, err := event.Synthetic(t.Event, name, domains, dir)
	if err != nil {
		return fmt.Errorf("making synthetic event: %w", err)
	}
	opts.Timeout = timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h := luahost.New(opts)
	defer h.Close()
	return h.Dispatch(ctx, t.Script, ev)
}
