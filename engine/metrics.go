package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/renewal"
)

// The engine's side of package metrics: the Source it reads at scrape
// time (every certificate's Status, readiness), the instrumented HTTP
// client and the timed script hooks. Plugin calls are reported by the
// plugin/host Solver's Observe (solve.go, launch), orders and runs where
// they happen (obtain, Run).

// instrumentHTTP returns a copy of hc whose transport rec instruments.
func instrumentHTTP(hc *http.Client, rec metrics.Recorder, directory string) *http.Client {
	if _, nop := rec.(metrics.Nop); nop {
		return hc
	}
	cp := *hc
	cp.Transport = rec.Transport(hc.Transport, directory)
	return &cp
}

// timedHook reports every event its Hook handles to the metrics.
type timedHook struct {
	event.Hook
	rec metrics.Recorder
}

func (h timedHook) Handle(ctx context.Context, ev event.Event) error {
	start := time.Now()
	err := h.Hook.Handle(ctx, ev)
	h.rec.Script(string(ev.Type), err, time.Since(start))
	return err
}

// timeHooks wraps the hooks of the certificates that have scripts.
func timeHooks(hooks map[string]event.Hook, cfg *config.Config, rec metrics.Recorder) {
	for _, c := range cfg.Certificates {
		if h, ok := hooks[c.Name]; ok && len(c.Scripts) > 0 {
			hooks[c.Name] = timedHook{h, rec}
		}
	}
}

// CertificateMetrics implements metrics.Source: every configured
// certificate's Status (what list and explain show) as the metrics report
// it. What the engine read since it last wrote a certificate's state is
// reported as read (statusCache); the rest is read now.
func (e *Engine) CertificateMetrics(ctx context.Context) []metrics.Certificate {
	out := make([]metrics.Certificate, len(e.cfg.Certificates))
	now := e.now()
	var missing []*config.Certificate
	var at []int
	for i, c := range e.cfg.Certificates {
		owned := e.coord == nil || e.coord.Owns(c.Name)
		if m, ok := e.status.get(c.Name, now, owned); ok {
			out[i] = m
			continue
		}
		missing, at = append(missing, c), append(at, i)
	}
	e.loadEach(ctx, missing, func(i int, j *job) { out[at[i]] = certificateMetrics(j.status, j.meta, now) })
	return out
}

// certificateMetrics reports s, whose renewal state is in meta, at now.
func certificateMetrics(s Status, meta *Meta, now time.Time) metrics.Certificate {
	m := metrics.Certificate{Name: s.Name, Err: s.Err, LastResult: "none"}
	if s.Err != nil || meta == nil {
		return m
	}
	if s.Current != nil {
		m.NotAfter = s.Current.NotAfter
	}
	m.NextRenewal = s.Decision.At
	if !s.At.IsZero() {
		m.NextRenewal = s.At
	}
	if s.LastEvent != nil {
		m.LastResult = metrics.ResultSuccess
		if s.LastEvent.Result != "ok" {
			m.LastResult = metrics.ResultFailure
		}
	}
	m.Failures = meta.Renewal.Failures
	if s.Next == NextHold {
		m.Held = heldBy(meta.Renewal, now)
	}
	m.PendingDeploy = s.PendingDeploy
	return m
}

// heldBy says what holds a certificate's order back: the failure backoff
// while it lasts, else the reissue guard.
func heldBy(st renewal.State, now time.Time) string {
	if st.Failures > 0 && st.RetryAt.After(now) {
		return metrics.HeldBackoff
	}
	return metrics.HeldGuard
}

// Ready implements metrics.Source: the storage answers and every plugin
// the engine started is running (a plugin that failed to start, or whose
// process exited, is reported until the daemon's next cycle launches it
// again).
func (e *Engine) Ready(ctx context.Context) error {
	var errs []error
	if _, err := e.store.Names(ctx); err != nil {
		errs = append(errs, fmt.Errorf("storage: %w", err))
	}
	e.plugins.mu.Lock()
	for name, pe := range e.plugins.entries {
		select {
		case <-pe.ready:
		default:
			continue // launching
		}
		switch {
		case pe.err != nil:
			errs = append(errs, fmt.Errorf("plugin %s did not start: %w", name, pe.err))
		case pe.p.Exited():
			errs = append(errs, fmt.Errorf("plugin %s is not running", name))
		}
	}
	e.plugins.mu.Unlock()
	return errors.Join(errs...)
}
