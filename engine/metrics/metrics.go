// Package metrics keeps acmehook's Prometheus metrics: what the engine
// records as it works (ACME requests, orders, problems, plugin calls,
// script handlers, runs) and, read from the engine at scrape time, the
// state of every certificate. It serves them with /healthz and /readyz
// (acmehook daemon) or writes them to a file for node_exporter's textfile
// collector (acmehook run). Every metric is named acmehook_*; the list is
// in docs/operations.md.
//
// The engine calls a Recorder; Nop records nothing. The metrics live in a
// registry of their own, never Prometheus's global one.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Results recorded in the result labels.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// Hold reasons of acmehook_certificate_held.
const (
	HeldBackoff = "backoff" // consecutive failures earned a backoff
	HeldGuard   = "guard"   // the reissue guard (max_orders) holds orders back
)

// Last results of acmehook_certificate_last_result, sorted (as a scrape
// lists the series).
var sortedResults = []string{ResultFailure, "none", ResultSuccess}

// Certificate is one certificate's state as the engine's Status reports
// it, at the time of a scrape.
type Certificate struct {
	Name string
	// NotAfter is the stored current certificate's expiry; zero when none
	// is stored.
	NotAfter time.Time
	// NextRenewal is when the certificate is due for renewal (or when a
	// hold ends); zero when unknown.
	NextRenewal time.Time
	// LastResult is ResultSuccess, ResultFailure or "none" (nothing
	// recorded yet).
	LastResult string
	// Failures counts consecutive failed orders.
	Failures int
	// Held is HeldBackoff or HeldGuard when a new certificate is needed but
	// held back, else empty.
	Held string
	// PendingDeploy reports that the certificate's deploy failed and is
	// retried by the next run.
	PendingDeploy bool
	// Err is set when the certificate's state could not be read; then only
	// Name is used.
	Err error
}

// Source is what the metrics read at scrape time: the engine.
type Source interface {
	// CertificateMetrics returns the state of every configured
	// certificate.
	CertificateMetrics(ctx context.Context) []Certificate
	// Ready reports why the engine cannot work now (storage unreachable, a
	// plugin down), or nil.
	Ready(ctx context.Context) error
}

// Recorder is what the engine reports to. Its methods are safe for
// concurrent use.
type Recorder interface {
	// SetSource makes src the engine whose certificates and readiness are
	// reported (the daemon's current one after a reload).
	SetSource(src Source)
	// Transport instruments next, the engine's HTTP transport to the CA
	// whose directory is at directoryURL.
	Transport(next http.RoundTripper, directoryURL string) http.RoundTripper
	// Order records an order that ended, successful or not.
	Order(err error)
	// PluginCall records one call to a solver plugin.
	PluginCall(plugin, method string, err error, d time.Duration)
	// Script records one event handed to a certificate's scripts.
	Script(event string, err error, d time.Duration)
	// Run records a run that ended at end; ok reports that every
	// certificate succeeded.
	Run(ok bool, end time.Time)
}

// Nop is a Recorder that records nothing.
type Nop struct{}

// SetSource implements Recorder.
func (Nop) SetSource(Source) {}

// Transport implements Recorder: it returns next.
func (Nop) Transport(next http.RoundTripper, _ string) http.RoundTripper { return next }

// Order implements Recorder.
func (Nop) Order(error) {}

// PluginCall implements Recorder.
func (Nop) PluginCall(string, string, error, time.Duration) {}

// Script implements Recorder.
func (Nop) Script(string, error, time.Duration) {}

// Run implements Recorder.
func (Nop) Run(bool, time.Time) {}

// SourceTimeout bounds reading the certificates' state for one scrape,
// and a /readyz check.
const SourceTimeout = 10 * time.Second

// Metrics is the Recorder that keeps the metrics in its own registry.
type Metrics struct {
	reg *prometheus.Registry

	acmeRequests  *prometheus.CounterVec
	acmeDuration  *prometheus.HistogramVec
	acmeProblems  *prometheus.CounterVec
	orders        *prometheus.CounterVec
	pluginCalls   *prometheus.CounterVec
	pluginSeconds *prometheus.HistogramVec
	scripts       *prometheus.CounterVec
	scriptSeconds *prometheus.HistogramVec
	runs          *prometheus.CounterVec
	lastRun       prometheus.Gauge

	mu  sync.Mutex
	src Source
}

// New returns Metrics with every metric registered in a new registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.acmeRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_acme_requests_total",
		Help: "HTTP requests to the ACME server by endpoint (newOrder, authz, finalize ...) and HTTP status code (\"error\" when no response came).",
	}, []string{"endpoint", "status"})
	m.acmeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "acmehook_acme_request_duration_seconds",
		Help:    "Time from sending a request to the ACME server to its response headers, by endpoint.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"endpoint"})
	m.acmeProblems = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_acme_problems_total",
		Help: "Problem documents (RFC 8555 §6.7) received from the ACME server, by type without the urn:ietf:params:acme:error: prefix (\"other\" for a type outside it).",
	}, []string{"type"})
	m.orders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_orders_total",
		Help: "Certificate orders that ended, by result (success: certificate stored; failure).",
	}, []string{"result"})
	m.pluginCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_plugin_calls_total",
		Help: "Calls to solver plugins by plugin, method (info, present, wait, cleanup) and result.",
	}, []string{"plugin", "method", "result"})
	m.pluginSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "acmehook_plugin_call_duration_seconds",
		Help:    "Duration of calls to solver plugins by plugin and method.",
		Buckets: []float64{.005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 120, 300},
	}, []string{"plugin", "method"})
	m.scripts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_script_handlers_total",
		Help: "Events handed to a certificate's Lua scripts, by event and result (failure: a handler failed or vetoed).",
	}, []string{"event", "result"})
	m.scriptSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "acmehook_script_handler_duration_seconds",
		Help:    "Time a certificate's Lua scripts took to handle an event, by event.",
		Buckets: []float64{.005, .01, .05, .1, .5, 1, 5, 10, 30},
	}, []string{"event"})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "acmehook_runs_total",
		Help: "Runs (acmehook run, or one daemon cycle) by result (success: every certificate needs no attention).",
	}, []string{"result"})
	m.lastRun = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "acmehook_last_successful_run_timestamp_seconds",
		Help: "When the last run in which every certificate succeeded ended, in seconds since the Unix epoch.",
	})
	m.reg.MustRegister(m.acmeRequests, m.acmeDuration, m.acmeProblems, m.orders, m.pluginCalls,
		m.pluginSeconds, m.scripts, m.scriptSeconds, m.runs, m.lastRun)
	for _, r := range []string{ResultSuccess, ResultFailure} {
		m.orders.WithLabelValues(r)
		m.runs.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry holding the metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetSource implements Recorder.
func (m *Metrics) SetSource(src Source) {
	m.mu.Lock()
	m.src = src
	m.mu.Unlock()
}

func (m *Metrics) source() Source {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.src
}

func result(err error) string {
	if err != nil {
		return ResultFailure
	}
	return ResultSuccess
}

// Order implements Recorder.
func (m *Metrics) Order(err error) { m.orders.WithLabelValues(result(err)).Inc() }

// PluginCall implements Recorder.
func (m *Metrics) PluginCall(plugin, method string, err error, d time.Duration) {
	m.pluginCalls.WithLabelValues(plugin, method, result(err)).Inc()
	m.pluginSeconds.WithLabelValues(plugin, method).Observe(d.Seconds())
}

// Script implements Recorder.
func (m *Metrics) Script(event string, err error, d time.Duration) {
	m.scripts.WithLabelValues(event, result(err)).Inc()
	m.scriptSeconds.WithLabelValues(event).Observe(d.Seconds())
}

// Run implements Recorder.
func (m *Metrics) Run(ok bool, end time.Time) {
	if !ok {
		m.runs.WithLabelValues(ResultFailure).Inc()
		return
	}
	m.runs.WithLabelValues(ResultSuccess).Inc()
	m.lastRun.Set(float64(end.UnixNano()) / 1e9)
}

// problem records a problem document of type typ.
func (m *Metrics) problem(typ string) {
	const ns = "urn:ietf:params:acme:error:"
	name, ok := strings.CutPrefix(typ, ns)
	if !ok || name == "" || strings.ContainsAny(name, ": ") || len(name) > 64 {
		name = "other"
	}
	m.acmeProblems.WithLabelValues(name).Inc()
}

// ErrNotLoaded is Ready's error before an engine was set.
var ErrNotLoaded = errors.New("metrics: no configuration loaded")

// Ready reports whether the source is ready (see Source.Ready).
func (m *Metrics) Ready(ctx context.Context) error {
	src := m.source()
	if src == nil {
		return ErrNotLoaded
	}
	ctx, cancel := context.WithTimeout(ctx, SourceTimeout)
	defer cancel()
	return src.Ready(ctx)
}

// The certificate families, with their help texts, in the order a
// scrape lists them (by name).
const (
	nameCerts       = "acmehook_certificates"
	nameFailures    = "acmehook_certificate_consecutive_failures"
	namePending     = "acmehook_certificate_deploy_pending"
	nameHeld        = "acmehook_certificate_held"
	nameLastResult  = "acmehook_certificate_last_result"
	nameNextRenewal = "acmehook_certificate_next_renewal_timestamp_seconds"
	nameNotAfter    = "acmehook_certificate_not_after_timestamp_seconds"
	nameStateError  = "acmehook_certificate_state_error"
	nameDeploys     = "acmehook_deploys_pending"
)

var certHelp = map[string]string{
	nameNotAfter:    "Expiry (notAfter) of the certificate's stored current certificate, in seconds since the Unix epoch.",
	nameNextRenewal: "When the certificate is due for renewal, or when the backoff or guard holding it ends, in seconds since the Unix epoch.",
	nameLastResult:  "1 for the result of the certificate's last recorded event (success, failure, none), 0 for the others.",
	nameFailures:    "Consecutive failed orders of the certificate.",
	nameHeld:        "1 when a new certificate is needed but the reason (backoff, guard) holds the order back, 0 otherwise.",
	namePending:     "1 when the certificate was stored but its deploy failed and is retried by the next run.",
	nameStateError:  "1 when the certificate's stored state could not be read (then its other series are missing), 0 otherwise.",
	nameDeploys:     "Certificates whose deploy is pending.",
	nameCerts:       "Configured certificates.",
}

// gatherer is what a scrape (and WriteFile) reads: the registry's
// metrics, and the certificates' state read from the source at that
// moment. The certificate families are built as the exposition holds them
// (sorted by certificate, labels in order), not through constant metrics
// the registry would check, hash and sort one by one: ten series per
// certificate, 100,000 for 10,000 certificates.
type gatherer struct{ m *Metrics }

func (g gatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := g.m.reg.Gather()
	certs := g.m.certFamilies()
	if len(certs) == 0 {
		return mfs, err
	}
	out := make([]*dto.MetricFamily, 0, len(mfs)+len(certs))
	out = append(append(out, mfs...), certs...)
	slices.SortStableFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, err
}

// certFamilies reads the certificates from the source.
func (m *Metrics) certFamilies() []*dto.MetricFamily {
	src := m.source()
	if src == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), SourceTimeout)
	defer cancel()
	certs := slices.Clone(src.CertificateMetrics(ctx))
	slices.SortStableFunc(certs, func(a, b Certificate) int { return strings.Compare(a.Name, b.Name) })
	fams := map[string]*dto.MetricFamily{}
	family := func(name string) *dto.MetricFamily {
		f := fams[name]
		if f == nil {
			f = &dto.MetricFamily{Name: proto.String(name), Help: proto.String(certHelp[name]), Type: dto.MetricType_GAUGE.Enum(), Metric: make([]*dto.Metric, 0, len(certs))}
			fams[name] = f
		}
		return f
	}
	labelCert, labelReason, labelResult := proto.String("certificate"), proto.String("reason"), proto.String("result")
	values := map[string]*dto.LabelPair{}
	value := func(name *string, v string) *dto.LabelPair {
		k := *name + "=" + v
		if p := values[k]; p != nil {
			return p
		}
		p := &dto.LabelPair{Name: name, Value: proto.String(v)}
		values[k] = p
		return p
	}
	gauge := func(fam string, v float64, labels ...*dto.LabelPair) {
		f := family(fam)
		f.Metric = append(f.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: proto.Float64(v)}})
	}
	b := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	ts := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	pending := 0
	for _, s := range certs {
		cert := &dto.LabelPair{Name: labelCert, Value: proto.String(s.Name)}
		one := []*dto.LabelPair{cert}
		gauge(nameStateError, b(s.Err != nil), one...)
		if s.Err != nil {
			continue
		}
		if !s.NotAfter.IsZero() {
			gauge(nameNotAfter, ts(s.NotAfter), one...)
		}
		if !s.NextRenewal.IsZero() {
			gauge(nameNextRenewal, ts(s.NextRenewal), one...)
		}
		for _, r := range sortedResults {
			gauge(nameLastResult, b(s.LastResult == r), cert, value(labelResult, r))
		}
		gauge(nameFailures, float64(s.Failures), one...)
		for _, r := range []string{HeldBackoff, HeldGuard} {
			gauge(nameHeld, b(s.Held == r), cert, value(labelReason, r))
		}
		gauge(namePending, b(s.PendingDeploy), one...)
		if s.PendingDeploy {
			pending++
		}
	}
	gauge(nameDeploys, float64(pending))
	gauge(nameCerts, float64(len(certs)))
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		out = append(out, f)
	}
	return out
}
