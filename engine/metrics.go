package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// The engine's side of package metrics: the Source it reads at scrape
// time (every certificate's Status, readiness), the instrumented HTTP
// client and the timed plugin calls. The engine reports orders, script
// events and runs where they happen (obtain, raise, Run).

// instrumentHTTP returns a copy of hc whose transport rec instruments.
func instrumentHTTP(hc *http.Client, rec metrics.Recorder, directory string) *http.Client {
	if _, nop := rec.(metrics.Nop); nop {
		return hc
	}
	cp := *hc
	cp.Transport = rec.Transport(hc.Transport, directory)
	return &cp
}

// CertificateMetrics implements metrics.Source: every configured
// certificate's Status (what list and explain show) as the metrics report
// it.
func (e *Engine) CertificateMetrics(ctx context.Context) []metrics.Certificate {
	out := make([]metrics.Certificate, len(e.cfg.Certificates))
	for i, c := range e.cfg.Certificates {
		j := e.load(ctx, c, loadOptions{})
		out[i] = certificateMetrics(j.status, j.meta, e.now())
	}
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

// record records a call to p that started at start.
func (p *Plugin) record(method string, err error, start time.Time) {
	if p.metrics != nil {
		p.metrics.PluginCall(p.name, method, err, time.Since(start))
	}
}

// Present calls the plugin's Present and records the call.
func (p *Plugin) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	start := time.Now()
	resp, err := p.Plugin.Present(ctx, req)
	p.record("present", err, start)
	return resp, err
}

// Wait calls the plugin's Wait and records the call.
func (p *Plugin) Wait(ctx context.Context, req *sdk.WaitRequest) (*sdk.WaitResponse, error) {
	start := time.Now()
	resp, err := p.Plugin.Wait(ctx, req)
	p.record("wait", err, start)
	return resp, err
}

// CleanUp calls the plugin's CleanUp and records the call.
func (p *Plugin) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	start := time.Now()
	resp, err := p.Plugin.CleanUp(ctx, req)
	p.record("cleanup", err, start)
	return resp, err
}
