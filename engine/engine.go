// Package engine runs acmehook's certificate lifecycle: for each configured
// certificate it decides whether a new one is needed, orders it from the CA
// (RFC 8555 §7.4), has the solver plugins and Lua scripts answer the
// challenges, stores the result, writes the optional copies and raises the
// lifecycle events to the certificate's scripts.
//
// An Engine launches each plugin it needs once, on first use, reuses it for
// every certificate and challenge (and for later runs of the same Engine),
// and stops it in Close. A plugin that failed to start is not tried again
// by the same Engine.
package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/luahost"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/store"
)

// Errors of the engine.
var (
	// ErrUnknownCertificate is returned for a certificate name that is not
	// in the configuration.
	ErrUnknownCertificate = errors.New("engine: no such certificate in the configuration")
	// ErrVetoed is wrapped by the error of a challenge a script refused in
	// its challenge-provision handler.
	ErrVetoed = errors.New("engine: challenge vetoed by a script")
	// ErrNoChallenge is matched when an authorization offers no challenge
	// type that the identifier's solver can answer (it is
	// acme.ErrNoChallenge, which *acme.NoChallengeError matches).
	ErrNoChallenge = acme.ErrNoChallenge
	// ErrDeploy is wrapped by the error of a certificate that was issued
	// and stored but whose output copies or scripts failed; the deploy is
	// retried by the next run.
	ErrDeploy = errors.New("engine: deploy failed")
	// ErrTermsOfService is returned when the CA has terms of service and
	// ca.agree_tos is false.
	ErrTermsOfService = errors.New("engine: the CA requires agreeing to its terms of service (set ca.agree_tos = true)")
)

// defaultProgressInterval is how often a long wait (validation,
// propagation, issuance) logs a progress line.
const defaultProgressInterval = 5 * time.Second

// Options configure an Engine.
type Options struct {
	// Config is the loaded configuration. Required.
	Config *config.Config
	// Store keeps accounts and certificates. Required; the engine does not
	// close it.
	Store *store.Store
	// Logger receives progress and errors; nil discards.
	Logger *slog.Logger
	// HTTPClient talks to the CA. Nil means a client trusting
	// Config.CA.CABundle (or the system roots).
	HTTPClient *http.Client
	// Now returns the current time; nil means time.Now. Renewal decisions
	// and recorded times use it.
	Now func() time.Time

	// Relay, when set, has the fleet's other nodes present every http-01
	// and tls-alpn-01 challenge too before the CA is told to validate it
	// (engine/fleet on etcd); nil: this node answers alone.
	Relay Relay
	// Plugins, when set, are the plugin processes the engine uses and
	// leaves running in Close (shared with a relay answering for other
	// nodes, and with the next engine after a reload); nil: the engine
	// launches its own and stops them in Close.
	Plugins *Plugins

	// Test seams, set by the package's own tests only.
	beforeAccept     challengeHook // runs before each challenge is answered
	progressInterval time.Duration // between progress lines; zero means 5 seconds
	// dryRun is set by DryRun (dryrun.go): events marked, no output
	// copies, no replaces.
	dryRun bool
	// Metrics records what the engine does and reads its certificates'
	// state (the engine becomes its source); nil records nothing.
	Metrics metrics.Recorder
	// Coordinator, for a node of a fleet sharing Store with others, says
	// which certificates this node orders and renews, and holds their
	// locks (owner.go); nil means this process works on every certificate
	// and Store's own fence guards its writes. With a coordinator, Store
	// is unfenced: the writes of a certificate go through its claim.
	Coordinator Coordinator
}

// Engine runs the certificate lifecycle. Its methods are safe for concurrent
// use; Close stops the plugins (and script hosts) it launched.
type Engine struct {
	cfg      *config.Config
	certs    map[string]*config.Certificate // cfg's, by name
	store    *store.Store
	log      *slog.Logger
	now      func() time.Time
	client   *acme.Client
	hooks    map[string]event.Hook // per certificate name
	scripts  []runScript           // receivers of the run-level events
	lua      *luahost.Host         // whose script host processes the hooks share
	progress time.Duration         // between progress lines of a long wait
	// beforeAccept is a test seam (Options.beforeAccept).
	beforeAccept  challengeHook
	plugins       *plugins
	sharedPlugins bool // plugins came from Options.Plugins: Close leaves them
	relay         Relay
	dryRun        bool // see DryRun
	// roots are what an issued chain must verify to (ca.trust_roots); nil
	// checks the chain's own signatures only.
	roots   *x509.CertPool
	metrics metrics.Recorder
	coord   Coordinator
	claims  sync.Map // certificate name -> *store.Store fenced by its claim
	// workers bound the certificates in progress to Config.Concurrency,
	// across the engine's runs (the daemon's may overlap: workers.go).
	workers *workers
	// termsMu keeps two overlapping runs from comparing the CA's terms
	// at once (checkTerms), and guards termsSeen: the account info as
	// checkTerms last read or wrote it, so that a run finds out without
	// reading the account that no look is due.
	termsMu   sync.Mutex
	termsSeen *store.AccountInfo
	status    *statusCache

	acctMu sync.Mutex
	acct   *acme.Account
}

// New checks opts and returns an Engine. It does no network I/O. The
// files the configuration names are checked here (config.CheckFiles, as
// `acmehook check` does), so a missing script or output directory stops a
// run before it orders anything.
func New(opts Options) (*Engine, error) {
	if opts.Config == nil || opts.Store == nil {
		return nil, errors.New("engine: Options.Config and Options.Store are required")
	}
	if err := opts.Config.CheckFiles(); err != nil {
		return nil, fmt.Errorf("%w\n%w", config.ErrInvalid, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = caHTTPClient(opts.Config.CA.CABundle); err != nil {
			return nil, err
		}
	}
	roots, err := trustRoots(opts.Config.CA.TrustRoots)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	hooks, scripts, lua := luaHooks(opts.Config, luahost.Options{Logger: log, LibDir: opts.Config.Lua.LibDir, Dir: opts.Config.Dir(), Vars: opts.Config.Lua.RevealedVars()})
	progress := opts.progressInterval
	if progress <= 0 {
		progress = defaultProgressInterval
	}
	rec := opts.Metrics
	if rec == nil {
		rec = metrics.Nop{}
	}
	hc = instrumentHTTP(hc, rec, opts.Config.CA.Directory)
	timeHooks(hooks, opts.Config, rec)
	for i := range scripts {
		scripts[i].hook = timedHook{scripts[i].hook, rec}
	}
	if opts.dryRun {
		markDryRun(hooks, scripts)
	}
	ps := newPlugins(opts.Config, log)
	if opts.Plugins != nil {
		ps = opts.Plugins.ps
		ps.reconfigure(opts.Config)
	}
	certs := make(map[string]*config.Certificate, len(opts.Config.Certificates))
	for _, c := range opts.Config.Certificates {
		certs[c.Name] = c
	}
	e := &Engine{
		cfg:   opts.Config,
		certs: certs,
		store: opts.Store,
		log:   log,
		now:   now,
		client: &acme.Client{
			DirectoryURL:   opts.Config.CA.Directory,
			HTTPClient:     hc,
			Logger:         log,
			UserAgent:      "acmehook/" + BuildVersion(),
			RequestTimeout: opts.Config.CA.HTTPTimeout.Duration,
			PollTimeout:    opts.Config.CA.OrderTimeout.Duration,
		},
		hooks:         hooks,
		scripts:       scripts,
		lua:           lua,
		beforeAccept:  opts.beforeAccept,
		progress:      progress,
		plugins:       ps,
		sharedPlugins: opts.Plugins != nil,
		relay:         opts.Relay,
		roots:         roots,
		metrics:       rec,
		dryRun:        opts.dryRun,
		coord:         opts.Coordinator,
		workers:       newWorkers(opts.Config.Concurrency),
		status:        newStatusCache(),
	}
	// Each certificate in progress is a sequence of requests: the nonce
	// pool grows to one nonce for each, so they do not wait for each
	// other's (docs/operations.md, At scale).
	e.client.Streams = e.workers.busy
	e.plugins.metrics = rec
	rec.SetSource(e)
	return e, nil
}

// trustRoots returns the roots named by ca.trust_roots: the system's for
// "system", the PEM file's for a path, nil when unset.
func trustRoots(from string) (*x509.CertPool, error) {
	switch from {
	case "":
		return nil, nil
	case config.TrustRootsSystem:
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("ca.trust_roots: loading the system roots: %w", err)
		}
		return pool, nil
	}
	b, err := os.ReadFile(from)
	if err != nil {
		return nil, fmt.Errorf("reading ca.trust_roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("reading ca.trust_roots %s: no PEM certificate in it", from)
	}
	return pool, nil
}

// maxIdleConnsPerCA is how many idle connections to the CA are kept.
const maxIdleConnsPerCA = 64

// caHTTPClient returns an HTTP client that trusts the PEM roots in bundle,
// or the system roots when bundle is empty.
func caHTTPClient(bundle string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyFromEnvironment
	// Every certificate of a run talks to the one CA host: keep a
	// connection per worker (concurrency, and the authorizations of an
	// order solved at once) instead of the default 2, so a busy run does
	// not open, and TLS-handshake, a new connection for most requests.
	tr.MaxIdleConnsPerHost = maxIdleConnsPerCA
	if bundle != "" {
		pem, err := os.ReadFile(bundle)
		if err != nil {
			return nil, fmt.Errorf("reading ca_bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading ca_bundle %s: no PEM certificate in it", bundle)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// Close stops every plugin the engine launched and the idle Lua script
// host processes.
func (e *Engine) Close() error {
	e.lua.Close()
	if e.sharedPlugins {
		return nil
	}
	return e.plugins.closeAll()
}

// Action says what a run did with a certificate.
type Action string

// Actions of a Result.
const (
	// ActionNone: the certificate is current; nothing was done.
	ActionNone Action = "none"
	// ActionIssued: a first certificate was obtained.
	ActionIssued Action = "issued"
	// ActionRenewed: a certificate replaced a previous one.
	ActionRenewed Action = "renewed"
	// ActionDeployed: a pending deploy was retried without a new order.
	ActionDeployed Action = "deployed"
	// ActionFailed: see Result.Err.
	ActionFailed Action = "failed"
	// ActionHeld: a new certificate is needed, but the failure backoff or
	// the reissue guard holds the order back (Reason says until when).
	ActionHeld Action = "held"
	// ActionBusy: in a fleet, another node or process holds the
	// certificate's lock (Reason names it); it is looked at again soon.
	ActionBusy Action = "busy"
)

// Result is what a run did with one certificate.
type Result struct {
	Name   string
	Action Action
	// Reason says why a new certificate was (or was not) needed.
	Reason string
	// Version is the stored version ID of the new or current certificate.
	Version string
	// Serial and NotAfter describe that certificate, when there is one.
	Serial   string
	NotAfter time.Time
	// Err is why the certificate failed. A deploy failure after a good
	// issuance wraps ErrDeploy (and Action is issued or renewed: the new
	// certificate is kept).
	Err      error
	Duration time.Duration

	// nextCheck is the decision's next check when the run knows the
	// certificate's state as it left it, so the daemon need not read it
	// again: the run left it as it found it (ActionNone, ActionHeld), or
	// stored and deployed a version with every write done (afterDeploy);
	// zero otherwise.
	nextCheck time.Time
}

// OK reports whether the certificate needs no attention.
func (r Result) OK() bool { return r.Err == nil }

// RunResult is the outcome of Run, one Result per certificate in
// configuration order.
type RunResult struct {
	Results []Result
}

// Failed returns the results with an error.
func (r *RunResult) Failed() []Result {
	var out []Result
	for _, x := range r.Results {
		if !x.OK() {
			out = append(out, x)
		}
	}
	return out
}

// OK reports whether every certificate succeeded.
func (r *RunResult) OK() bool { return len(r.Failed()) == 0 }

// RunOptions select what Run does.
type RunOptions struct {
	// Names restricts the run to these certificates; empty means all.
	Names []string
	// Force orders a new certificate even when the current one is good
	// (acmehook issue NAME).
	Force bool

	// urgent, take and ended are the daemon's (daemon.go). An urgent
	// run's certificates get the next free worker before those of the
	// engine's other runs (workers.go). take is asked right
	// before a certificate's job runs; false leaves the certificate out of
	// this run (a newer run of the daemon has it). ended is told each
	// job's result when it ends (its lock released), on the job's
	// goroutine.
	urgent bool
	take   func(name string) bool
	ended  func(name string, r Result)
}

// Run processes the selected certificates concurrently, at most
// Config.Concurrency at a time (shared by the engine's runs when they
// overlap, as the daemon's do in a fleet): each one is checked, and issued,
// renewed or redeployed as needed (see obtain). One failing certificate does not stop
// the others. The run is framed by run-begin, once the plugins are up and
// before any certificate is handled, and run-end, once every certificate
// is done (runBegin, runEnd); just before run-end the CA's terms of service
// are compared with the account's (checkTerms). The returned error is only for problems that prevented the
// run as a whole (an unknown name); per-certificate failures are in the
// result.
func (e *Engine) Run(ctx context.Context, opts RunOptions) (*RunResult, error) {
	certs := e.cfg.Certificates
	if len(opts.Names) > 0 {
		certs = nil
		for _, n := range opts.Names {
			c := e.certs[n]
			if c == nil {
				return nil, fmt.Errorf("%w: %q", ErrUnknownCertificate, n)
			}
			certs = append(certs, c)
		}
	}

	started := e.now()
	res := &RunResult{Results: make([]Result, len(certs))}
	jobs := make([]*job, len(certs))
	var pwg sync.WaitGroup
	for i, c := range certs {
		if err := e.workers.acquire(ctx, opts.urgent); err != nil {
			jobs[i] = &job{cert: c, log: e.log.With("cert", c.Name), status: Status{Name: c.Name, Domains: c.Domains, Err: err}}
			continue
		}
		pwg.Add(1)
		go func() {
			defer func() { e.workers.release(); pwg.Done() }()
			jobs[i] = e.prepare(ctx, c, loadOptions{force: opts.Force, fetchARI: true})
		}()
	}
	pwg.Wait()
	// Launch the plugins the run needs, and check that they can solve
	// every identifier, before any request to the CA.
	e.preparePlugins(ctx, jobs)
	e.runBegin(ctx, jobs, started)

	// One goroutine per certificate in progress, not per certificate: a
	// run of 10,000 holds Concurrency of them.
	skipped := make([]bool, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		if err := e.workers.acquire(ctx, opts.urgent); err != nil {
			res.Results[i] = Result{Name: j.cert.Name, Action: ActionFailed, Err: err}
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { e.workers.release(); wg.Done() }()
			if opts.take != nil && !opts.take(j.cert.Name) {
				skipped[i] = true
				return
			}
			if e.coord != nil {
				// In a fleet: under the certificate's lock, if this node
				// owns it now (owner.go).
				j = e.claimed(ctx, j, loadOptions{force: opts.Force, fetchARI: true})
				jobs[i] = j
			}
			jctx, stop := e.whileHeld(ctx, j)
			r := e.execute(jctx, j)
			stop()
			j.done()
			if r.Action == ActionNone || r.Action == ActionHeld {
				r.nextCheck = j.status.NextCheck
			}
			res.Results[i] = r
			if opts.ended != nil {
				opts.ended(j.cert.Name, r)
			}
		}()
	}
	wg.Wait()
	if slices.Contains(skipped, true) {
		// Handed to a newer run of the daemon, which reports them.
		var kj []*job
		var kr []Result
		for i, j := range jobs {
			if !skipped[i] {
				kj, kr = append(kj, j), append(kr, res.Results[i])
			}
		}
		jobs, res.Results = kj, kr
	}
	e.termsMu.Lock()
	e.checkTerms(ctx, ordersPlaced(jobs))
	e.termsMu.Unlock()
	e.runEnd(ctx, jobs, res, started)
	e.metrics.Run(res.OK(), e.now())
	return res, nil
}

// preparePlugins launches, in parallel, every plugin needed by a job that
// orders a certificate and checks each identifier against its solver's
// capabilities. A job whose plugin cannot start or cannot solve one of its
// identifiers gets its status's Err set.
func (e *Engine) preparePlugins(ctx context.Context, jobs []*job) {
	var names []string
	for _, j := range jobs {
		if !j.orders() {
			continue
		}
		for _, id := range j.cert.Identifiers {
			if s := j.cert.SolverFor(id); !slices.Contains(names, s) {
				names = append(names, s)
			}
		}
	}
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.plugins.get(ctx, n) // the error is reported per certificate below
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		if !j.orders() {
			continue
		}
		j.status.Err = e.checkSolvers(ctx, j.cert)
	}
}

// checkSolvers reports every identifier of cert that its solver cannot
// validate (config's capability check, the one `acmehook check` reports),
// or whose solver did not start.
func (e *Engine) checkSolvers(ctx context.Context, cert *config.Certificate) error {
	var errs []error
	caps := map[string]config.Capabilities{}
	tried := map[string]bool{}
	for _, id := range cert.Identifiers {
		name := cert.SolverFor(id)
		if tried[name] {
			continue
		}
		tried[name] = true
		p, err := e.plugins.get(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		caps[name] = p.Capabilities()
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return e.cfg.CheckSolvers(cert, caps)
}
