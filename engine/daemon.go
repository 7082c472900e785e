package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/acmehook/acmehook/engine/config"
)

// Clock is the daemon's time source. Tests inject one to drive the
// schedule without sleeping.
type Clock interface {
	Now() time.Time
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Daemon timing.
const (
	// DefaultMaxSleep caps one wait of the daemon, so a wall clock that
	// jumps (or a suspended machine) is noticed within it. Waking early
	// only re-reads the store; the CA is contacted only for what is due.
	DefaultMaxSleep = time.Hour
	// MinRecheck is the shortest wait after a certificate was handled and
	// is still due (its state could not be saved, for example), so the
	// daemon never spins.
	MinRecheck = time.Minute
)

// DaemonOptions configure Daemon.
type DaemonOptions struct {
	// Options make the engine; Options.Config is the initial
	// configuration. Options.Now is replaced by Clock.Now.
	Options
	// Load re-reads the configuration when Reload receives. An invalid new
	// configuration (or one that moves the storage) is logged and the
	// previous one kept.
	Load   func() (*config.Config, error)
	Reload <-chan os.Signal
	// Clock is the time source; nil means the system clock.
	Clock Clock
	// MaxSleep caps one wait; zero means DefaultMaxSleep.
	MaxSleep time.Duration
	// afterRun, a test seam, is called after each run with its result.
	afterRun func(*RunResult)
}

// Daemon is the long-running form of Run (acmehook daemon). It keeps, per
// certificate, the time of its next check, from its renewal decision
// (Decision.NextCheck: the renewal time, the next renewal information
// fetch or the end of a backoff), runs the certificates whose time has
// come, and sleeps on a single timer until the earliest next check. A
// failing CA only makes certificates back off: the daemon keeps running.
// Before each run, plugins that died are forgotten so they are launched
// again.
//
// It returns nil when ctx is cancelled (SIGTERM): an in-flight run is
// abandoned through the same ctx, and challenge cleanup still runs. It
// returns an error only if the first engine cannot be made.
func Daemon(ctx context.Context, opts DaemonOptions) error {
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	maxSleep := opts.MaxSleep
	if maxSleep <= 0 {
		maxSleep = DefaultMaxSleep
	}
	eo := opts.Options
	eo.Now = clock.Now
	eng, err := New(eo)
	if err != nil {
		return err
	}
	defer func() {
		if err := eng.Close(); err != nil {
			eng.log.Warn("stopping plugins", "error", err)
		}
	}()
	log := eng.log
	log.Info("daemon started", "certificates", len(eng.cfg.Certificates))
	next := newSchedule(eng.names()) // every certificate is checked at once
	for {
		if due := next.due(clock.Now()); len(due) > 0 {
			for _, n := range eng.plugins.forgetDead() {
				log.Warn("plugin is not running; it will be launched again", "plugin", n)
			}
			eng.inConfigOrder(due)
			res, err := eng.Run(ctx, RunOptions{Names: due})
			if ctx.Err() != nil {
				log.Info("daemon stopping")
				return nil
			}
			if err != nil {
				log.Error("run failed", "error", err)
			}
			if res != nil && opts.afterRun != nil {
				opts.afterRun(res)
			}
			checked := map[string]time.Time{}
			if res != nil {
				for _, r := range res.Results {
					checked[r.Name] = r.nextCheck
				}
			}
			for _, n := range due {
				next.set(n, eng.nextCheck(ctx, eng.certs[n], checked[n]))
			}
			if res != nil && eng.coord != nil {
				// In a fleet, a certificate whose lock another node held
				// is looked at again soon.
				for _, r := range res.Results {
					if r.Action == ActionBusy {
						next.set(r.Name, clock.Now().Add(eng.coord.Interval()))
					}
				}
			}
		} else {
			// Nothing due: the CA's terms are still looked at once a day
			// (the wait below is at most MaxSleep, an hour by default).
			eng.checkTerms(ctx, false)
		}
		name, at, ok := next.earliest()
		wait := maxSleep
		if ok {
			wait = min(max(at.Sub(clock.Now()), 0), maxSleep)
			log.Info("next check", "cert", name, "at", at.UTC().Format(time.RFC3339), "in", wait.Round(time.Second).String())
		}
		var changed <-chan struct{} // in a fleet: another node stored, or nodes came or went
		if eng.coord != nil {
			changed = eng.coord.Changed()
		}
		select {
		case <-ctx.Done():
			log.Info("daemon stopping")
			return nil
		case <-changed:
			names, all := eng.coord.TakeChanges()
			if all {
				next = newSchedule(eng.names())
			}
			for _, n := range names {
				if eng.certs[n] != nil {
					next.set(n, clock.Now())
				}
			}
		case <-opts.Reload:
			neng, err := reload(opts, eo, eng.cfg)
			if err != nil {
				log.Error("reloading the configuration failed; keeping the previous one", "error", err)
				continue
			}
			if err := eng.Close(); err != nil {
				log.Warn("stopping plugins", "error", err)
			}
			eng, next = neng, newSchedule(neng.names())
			log.Info("configuration reloaded", "certificates", len(eng.cfg.Certificates))
		case <-clock.After(wait):
		}
	}
}

// reload loads the configuration again and makes an engine for it.
func reload(opts DaemonOptions, eo Options, old *config.Config) (*Engine, error) {
	if opts.Load == nil {
		return nil, errors.New("no way to load the configuration")
	}
	cfg, err := opts.Load()
	if err != nil {
		return nil, err
	}
	if from, to := old.Store.Where(), cfg.Store.Where(); from != to {
		return nil, fmt.Errorf("storage moved from %s to %s: restart the daemon for that", from, to)
	}
	eo.Config = cfg
	return New(eo)
}

// nextCheck is when the daemon should look at cert again, never sooner
// than MinRecheck: known, when the run left cert's state as it found it
// (nothing was done, or the order was held back), from the status the run
// decided on; otherwise from its state read again.
func (e *Engine) nextCheck(ctx context.Context, cert *config.Certificate, known time.Time) time.Time {
	soon := e.now().Add(MinRecheck)
	at := known
	if at.IsZero() {
		st := e.load(ctx, cert, loadOptions{infoOnly: true}).status
		if st.Err != nil {
			e.log.Warn("loading the certificate's state", "cert", cert.Name, "error", st.Err)
			return soon
		}
		at = st.NextCheck
	}
	if at.Before(soon) {
		return soon
	}
	return at
}

// names returns the configured certificates' names.
func (e *Engine) names() []string {
	out := make([]string, len(e.cfg.Certificates))
	for i, c := range e.cfg.Certificates {
		out[i] = c.Name
	}
	return out
}

// inConfigOrder sorts names of configured certificates as the
// configuration lists them.
func (e *Engine) inConfigOrder(names []string) {
	if len(names) < 2 {
		return
	}
	pos := make(map[string]int, len(names))
	for _, n := range names {
		pos[n] = -1
	}
	for i, c := range e.cfg.Certificates {
		if _, ok := pos[c.Name]; ok {
			pos[c.Name] = i
		}
	}
	slices.SortFunc(names, func(a, b string) int { return pos[a] - pos[b] })
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// forgetDead drops the plugins whose process exited and the launches that
// failed, so that the next use launches them again, and returns their
// names.
func (ps *plugins) forgetDead() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var names []string
	for name, e := range ps.entries {
		select {
		case <-e.ready:
		default:
			continue // still launching
		}
		if e.err == nil && !e.p.Exited() {
			continue
		}
		if e.p != nil {
			e.p.Close()
		}
		delete(ps.entries, name)
		names = append(names, name)
	}
	return names
}
