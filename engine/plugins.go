package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/plugin/host"
)

// Plugin is a running solver plugin with what it reported about itself.
type Plugin struct {
	*host.Plugin
	Config *config.Plugin
	Info   *host.InfoResponse
}

// Capabilities converts the plugin's Info into what the config package
// checks identifiers against.
func (p *Plugin) Capabilities() config.Capabilities {
	return config.Capabilities{Challenges: slices.Clone(p.Info.ChallengeTypes)}
}

// plugins launches each configured plugin at most once, on first use, and
// hands the same process to every certificate and challenge of the run.
type plugins struct {
	cfg     *config.Config
	logger  *slog.Logger
	metrics metrics.Recorder

	mu      sync.Mutex
	entries map[string]*pluginEntry
}

type pluginEntry struct {
	ready chan struct{} // closed once p or err is set
	p     *Plugin
	err   error
}

func newPlugins(cfg *config.Config, logger *slog.Logger) *plugins {
	return &plugins{cfg: cfg, logger: logger, metrics: metrics.Nop{}, entries: map[string]*pluginEntry{}}
}

// get returns the running plugin called name, launching it, configuring it
// and asking its Info the first time. A failed launch is remembered: the
// run does not try again.
func (ps *plugins) get(ctx context.Context, name string) (*Plugin, error) {
	ps.mu.Lock()
	e, ok := ps.entries[name]
	if !ok {
		e = &pluginEntry{ready: make(chan struct{})}
		ps.entries[name] = e
		ps.mu.Unlock()
		e.p, e.err = ps.launch(ctx, name)
		close(e.ready)
	} else {
		ps.mu.Unlock()
	}
	select {
	case <-e.ready:
		return e.p, e.err
	case <-ctx.Done():
		return nil, fmt.Errorf("plugin %s: waiting for launch: %w", name, ctx.Err())
	}
}

func (ps *plugins) launch(ctx context.Context, name string) (*Plugin, error) {
	cfg := ps.config()
	pc, ok := cfg.Plugins[name]
	if !ok {
		return nil, fmt.Errorf("plugin %s: not configured", name)
	}
	var env []string
	secrets := pc.SecretValues()
	for _, k := range pc.Env {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
			secrets = append(secrets, v) // passed through for the plugin's use: an API token
		}
	}
	ps.logger.Debug("launching plugin", "plugin", name, "path", pc.Path)
	p, err := host.Launch(ctx, host.LaunchOptions{
		Name:         name,
		Path:         pc.Path,
		SHA256:       pc.SHA256,
		Env:          env,
		Dir:          cfg.Dir(),
		Config:       pc.RevealedConfig(),
		Secrets:      secrets,
		StartTimeout: pc.StartTimeout.Duration,
		MaxCalls:     pc.MaxCalls,
		CallTimeout:  pc.CallTimeout.Duration,
		Logger:       ps.logger,
	})
	if err != nil {
		return nil, err // host.Launch names the plugin and the path
	}
	callCtx, cancel := context.WithTimeout(ctx, pc.CallTimeout.Duration)
	defer cancel()
	start := time.Now()
	info, err := p.Info(callCtx, &host.InfoRequest{})
	ps.metrics.PluginCall(name, "info", err, time.Since(start))
	if err != nil {
		p.Close()
		return nil, err // the SDK names the plugin and the call
	}
	ps.logger.Info("plugin started", "plugin", name, "name", info.Name, "version", info.Version, "challenges", info.ChallengeTypes)
	return &Plugin{Plugin: p, Config: pc, Info: info}, nil
}

// closeAll stops every plugin that was launched.
func (ps *plugins) closeAll() error {
	ps.mu.Lock()
	entries := ps.entries
	ps.entries = map[string]*pluginEntry{}
	ps.mu.Unlock()
	var errs []error
	for name, e := range entries {
		<-e.ready
		if e.p == nil {
			continue
		}
		if err := e.p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("plugin %s: closing: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// PluginStatus is one configured plugin as LaunchAll found it.
type PluginStatus struct {
	Name   string
	Plugin *Plugin // nil when Err is set
	Err    error
}

// LaunchAll starts every plugin of cfg, or only those named, in parallel
// (launch, configure, Info), without contacting the CA, as `acmehook
// check` and `acmehook plugins` do. The result is sorted by name; stop
// stops the plugins.
func LaunchAll(ctx context.Context, cfg *config.Config, logger *slog.Logger, only ...string) (_ []PluginStatus, stop func() error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ps := newPlugins(cfg, logger)
	names := make([]string, 0, len(cfg.Plugins))
	for n := range cfg.Plugins {
		if len(only) == 0 || slices.Contains(only, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	out := make([]PluginStatus, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := ps.get(ctx, n)
			out[i] = PluginStatus{Name: n, Plugin: p, Err: err}
		}()
	}
	wg.Wait()
	return out, ps.closeAll
}
