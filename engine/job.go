package engine

// One certificate's run, top-down: load (stored version, state, decision)
// → execute → obtain: account → order → authorizations (acme's flow with
// the certificate's solver, solve.go) → key
// and CSR → finalize → download → store → deploy (output copies, then the
// issued or renew event) → record. A failure raises failed and records it.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
)

// job is one certificate's run: the certificate, its stored current
// version and state, what to do with it, and its logger. load builds it;
// every step of the run takes it.
type job struct {
	cert *config.Certificate
	// current is the stored current version, nil when there is none; its
	// KeyPEM is nil when the key was moved aside.
	current *store.Version
	aside   bool // current's key was moved aside
	force   bool // ordered by `issue NAME`: no guard, no backoff
	meta    *Meta
	status  Status
	log     *slog.Logger
	// In a fleet (owner.go): release gives up the certificate's lock the
	// job holds (nil without one); owner names the node that owns the
	// certificate when it is not this one (the job only deploys); busy is
	// why the lock could not be taken (the job does nothing).
	release func()
	owner   string
	busy    error
	// claim is the certificate's lock the job holds (nil without one);
	// lostOnce logs its loss once (owner.go).
	claim    *Claim
	lostOnce sync.Once
}

// load reads cert's current version and state and decides what a run
// would do with it (decide). With opts.fetchARI, renewal information is
// fetched first when the decision asks for it, and the outcome saved.
// A state that cannot be read leaves the job's status with Err set.
func (e *Engine) load(ctx context.Context, cert *config.Certificate, opts loadOptions) *job {
	j := &job{cert: cert, force: opts.force, log: e.log}
	if !opts.infoOnly {
		// A job read only to report its status logs nothing, and a
		// logger with the attribute costs an allocation and its
		// formatting per certificate (2 % of listing 10,000).
		j.log = e.log.With("cert", cert.Name)
	}
	gen := e.status.generation(cert.Name)
	fail := func(err error) *job {
		j.status = Status{Name: cert.Name, Domains: cert.Domains, Err: err}
		return j
	}
	v, meta, err := e.loadCurrent(ctx, cert.Name, opts.infoOnly)
	if meta == nil {
		return fail(err)
	}
	j.meta = meta
	aside := errors.Is(err, store.ErrKeyMovedAside)
	switch {
	case errors.Is(err, store.ErrNotFound):
		v = nil
	case err != nil && !aside:
		return fail(err) // it says "loading certificate <name>" or "decoding metadata of <name>"
	}
	j.current, j.aside = v, aside
	if meta.PendingDeploy, err = e.deployPending(ctx, cert.Name, v, meta); err != nil {
		return fail(err)
	}
	j.status = e.decide(cert, v, aside, meta, opts.force)
	if opts.fetchARI && !opts.force && v != nil && !aside && j.status.Decision.FetchARI {
		e.fetchARI(ctx, v, &meta.Renewal, j.log)
		if err := e.saveMeta(ctx, cert.Name, meta); err != nil {
			return fail(fmt.Errorf("saving metadata: %w", err))
		}
		j.status = e.decide(cert, v, aside, meta, false)
	}
	e.cacheStatus(gen, j)
	return j
}

// execute carries out j's status and records the outcome in its state.
func (e *Engine) execute(ctx context.Context, j *job) Result {
	start := time.Now()
	st := j.status
	res := Result{Name: j.cert.Name, Action: ActionNone, Reason: st.Reason}
	if j.current != nil {
		res.Version, res.Serial, res.NotAfter = j.current.ID, j.current.Info.Serial, j.current.Info.NotAfter
	}
	switch {
	case j.busy != nil:
		j.log.Info("not working on the certificate now: its lock is held", "reason", j.busy)
		res.Action, res.Reason = ActionBusy, j.busy.Error()
	case j.owner != "":
		res = e.deployOnly(ctx, j, res)
	case st.Err != nil:
		res = e.failed(ctx, j, res, &localError{st.Err})
	case st.Due():
		j.log.Info("obtaining certificate", "reason", st.Reason, "names", domains(j.cert))
		res = e.obtain(ctx, j, res)
	case st.Next == NextHold && j.current != nil && !j.current.Info.NotAfter.After(st.At):
		j.log.Error("not ordering now, and the certificate in service expires before the hold ends", "reason", st.Reason, "not_after", j.current.Info.NotAfter, "held_until", st.At)
		res.Action = ActionHeld
		e.renewalHeld(ctx, j)
	case st.Next == NextHold:
		j.log.Warn("not ordering now", "reason", st.Reason)
		res.Action = ActionHeld
		e.renewalHeld(ctx, j)
	case st.Next == NextRedeploy:
		j.log.Info("retrying deploy", "version", j.current.ID)
		res = e.redeploy(ctx, j, res)
	default:
		j.log.Info("certificate is current", "serial", res.Serial, "not_after", res.NotAfter, "renewal", st.Reason)
	}
	res.Duration = time.Since(start)
	return res
}

// obtain orders a certificate for j and deploys it, step by step:
// account, new order (RFC 8555 §7.4), authorizations solved concurrently
// (§7.5), key and CSR, finalize, download (preferred chain), store (the
// version becomes current once all its files are written), deploy (output
// copies, then the issued or renew event to the hooks). A failure before
// the certificate is stored raises failed; a deploy failure after it
// keeps the certificate and marks the deploy pending.
func (e *Engine) obtain(ctx context.Context, j *job, res Result) Result {
	// ca.order_timeout bounds the order as a whole (each wait is bounded
	// by it too, as the client's PollTimeout); the cleanup of presented
	// challenges runs past it.
	octx, cancel := context.WithTimeout(ctx, e.cfg.CA.OrderTimeout.Duration)
	v, leaf, err := e.order(octx, j)
	cancel()
	e.metrics.Order(err)
	if err != nil {
		return e.failed(ctx, j, res, err)
	}
	// The new certificate starts a fresh renewal state (the guard's orders
	// are kept); its renewal information is first asked for when it is
	// checked after a share of its lifetime (renewal.FirstARIFetch), not
	// now: its window is far away.
	meta := j.meta
	meta.Renewal.RecordSuccess(e.now(), renewal.Certificate{NotBefore: v.Info.NotBefore, NotAfter: v.Info.NotAfter})
	// The certificate is in hand: it is stored even when the run is being
	// stopped (SIGTERM), so the order is not wasted. The version becomes
	// current in one step with its metadata, the deploy marked pending, so
	// a stop or a crash between storing and deploying still deploys it on
	// the next run, and no crash leaves the new state beside the old
	// certificate.
	sctx := context.WithoutCancel(ctx)
	t, prevSerial := event.Issued, ""
	if prev := j.current; prev != nil {
		t, prevSerial = event.Renew, prev.Info.Serial
	}
	// A deploy with nothing to do (no output copies, no scripts, no other
	// nodes) cannot fail and changes nothing outside the storage: its
	// outcome is recorded with the version, and not written again after it.
	recorded := e.deployIsEmpty(j)
	meta.PendingDeploy = !recorded
	var withEvent func(id string)
	if recorded {
		withEvent = func(id string) {
			meta.Events = append(meta.Events, MetaEvent{Time: e.now(), Name: string(t), Result: "ok", Version: id})
		}
	}
	if err := e.commit(sctx, j.cert.Name, v, meta, withEvent); err != nil {
		if recorded {
			meta.Events = meta.Events[:len(meta.Events)-1]
		}
		return e.failed(ctx, j, res, fmt.Errorf("storing certificate: %w", err))
	}
	res.Action, res.Version, res.Serial, res.NotAfter = ActionIssued, v.ID, v.Info.Serial, v.Info.NotAfter
	if t == event.Renew {
		res.Action = ActionRenewed
	}
	j.log.Info("certificate stored", "version", v.ID, "serial", v.Info.Serial, "not_after", v.Info.NotAfter, "issuer", v.Info.Issuer)
	if recorded {
		j.log.Info("certificate deployed", "event", string(t), "version", v.ID)
		res.nextCheck = e.afterDeploy(j, v, meta)
		return res
	}
	if err := ctx.Err(); err != nil {
		j.log.Warn("stopping before the deploy; it runs on the next start", "version", v.ID)
		res.Err = fmt.Errorf("%w: %w", ErrDeploy, err)
		return res
	}
	return e.deploy(ctx, j, v, leaf, t, prevSerial, res)
}

// deployIsEmpty reports whether deploying j's new version has nothing to
// do: no output copies, no script for the certificate, no coordinator
// (whose per-node deploy record would be written).
func (e *Engine) deployIsEmpty(j *job) bool {
	o := j.cert.Output
	return e.coord == nil && len(j.cert.Scripts) == 0 && o.Cert == "" && o.Key == "" && o.Chain == "" && o.Fullchain == ""
}

// order runs the protocol part of obtain and returns the unsaved version.
func (e *Engine) order(ctx context.Context, j *job) (*store.Version, *x509.Certificate, error) {
	cert := j.cert
	ids := make([]acme.Identifier, len(cert.Identifiers))
	for i, id := range cert.Identifiers {
		ids[i] = acme.Identifier{Type: id.Type, Value: id.Value}
	}
	// The profile follows the CA's directory (profile.go); notBefore and
	// notAfter are sent as configured (a CA refusing them answers with
	// its problem).
	var offered map[string]string
	if dir, err := e.client.Directory(ctx); err == nil {
		offered = dir.Meta.Profiles
	}
	profile, warning := orderProfile(cert, offered)
	if warning != "" {
		j.log.Warn(warning)
	}
	nb, na := cert.OrderValidity(time.Now())
	var o acme.Order
	acct, err := e.withAccount(ctx, func(acct acme.Account) (err error) {
		o, err = e.newOrder(ctx, j, acct, acme.Order{Identifiers: ids, Profile: profile, NotBefore: nb, NotAfter: na})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	j.log.Debug("order created", "order", o.URL, "authorizations", len(o.Authorizations))
	if err := e.client.SolveAuthorizations(ctx, acct, o, e.solver(cert, j.log)); err != nil {
		return nil, nil, err
	}
	key, reused, err := e.certKey(cert, j.current)
	if err != nil {
		return nil, nil, err
	}
	csr, err := acme.NewCSR(key, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("making CSR: %w", err)
	}
	// In a fleet, a node paused past its lease must not finalize an order
	// whose certificate it could no longer store.
	if err := e.stillHeld(ctx, j); err != nil {
		return nil, nil, err
	}
	stop := progressLog(j.log, e.progress, "waiting for issuance")
	o, err = e.client.FinalizeOrder(ctx, acct, o, csr)
	stop()
	if err != nil {
		return nil, nil, err // it says "finalizing order <url>"
	}
	chain, err := e.client.FetchPreferredChain(ctx, acct, o.Certificate, cert.PreferredChain)
	if err != nil {
		return nil, nil, err // it says "downloading certificate <url>"
	}
	if len(chain.Certificates) == 0 {
		return nil, nil, fmt.Errorf("downloading certificate %s: empty chain", o.Certificate)
	}
	// Nothing the CA hands back is stored, deployed or announced before it
	// is checked: names, key, validity, not a CA, chain signatures, and the
	// trust_roots when set.
	// The CA's certificate must be valid on the wall clock, whatever
	// clock the renewal decisions run on (Options.Now).
	if err := acme.VerifyCertificate(chain.Certificates, key.Public(), ids, time.Now(), e.roots); err != nil {
		return nil, nil, fmt.Errorf("verifying certificate %s: %w", o.Certificate, err)
	}
	leaf := chain.Certificates[0]
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	var chainPEM bytes.Buffer
	for _, c := range chain.Certificates[1:] {
		pem.Encode(&chainPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &store.Version{
		KeyPEM:   keyPEM,
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		ChainPEM: chainPEM.Bytes(),
		Info: store.VersionInfo{
			OrderURL: o.URL,
			CertURL:  chain.URL,
			Serial:   leaf.SerialNumber.Text(16),
			Names:    certNames(leaf),
			KeyType:  string(cert.KeyType),
			// What the CA says it applied (the finalized order's profile).
			Profile:          o.Profile,
			ProfileRequested: cert.ProfileSetting(),
			Issuer:           leaf.Issuer.CommonName,
			NotBefore:        leaf.NotBefore,
			NotAfter:         leaf.NotAfter,
			IssuedAt:         e.now(),
			ReusedKey:        reused,
		},
	}, leaf, nil
}

// newOrder places the order, RFC 8555 §7.4, counting it for the reissue
// guard first (saved, so a crash still counts it). A renewal names the
// certificate it replaces (RFC 9773 §5) when the CA offers renewal
// information; if the CA refuses that (alreadyReplaced, or a request it
// cannot accept because of replaces), the order is placed once more
// without it.
func (e *Engine) newOrder(ctx context.Context, j *job, acct acme.Account, o acme.Order) (acme.Order, error) {
	cert, prev, meta, log := j.cert, j.current, j.meta, j.log
	// A dry run's order replaces nothing: the certificate in service is
	// not the staging CA's, and the real CA must not count it replaced.
	if prev != nil && !e.dryRun {
		if dir, err := e.client.Directory(ctx); err == nil && dir.RenewalInfo != "" {
			if leaf, err := parseLeaf(prev.CertPEM); err == nil {
				if id, err := acme.ARICertID(leaf); err == nil {
					o.Replaces = id
				}
			}
		}
	}
	place := func(o acme.Order) (acme.Order, error) {
		meta.Renewal.RecordOrder(e.now())
		if err := e.saveMeta(ctx, cert.Name, meta); err != nil {
			return acme.Order{}, fmt.Errorf("saving metadata: %w", err)
		}
		return e.client.NewOrder(ctx, acct, o)
	}
	created, err := place(o)
	if _, changed := e.reload(ctx, acct, err); err != nil && changed {
		// Refused for the account's key, which another process rolled
		// over: withAccount orders again with the stored account.
		return acme.Order{}, err
	}
	if err != nil && o.Replaces != "" && replacesRefused(err) {
		log.Warn("the CA refused the replaces field; ordering again without it", "replaces", o.Replaces, "error", err)
		// Forced (issue NAME) or with no certificate in service, the guard
		// does not hold the second attempt back.
		st := meta.Renewal
		if !inService(prev, j.aside, st, e.now()) {
			st.Orders = nil
		}
		if h := e.hold(cert, st); !j.force && !h.Due {
			return acme.Order{}, fmt.Errorf("%w; not ordering again: %s", err, h.Reason)
		}
		o.Replaces = ""
		created, err = place(o)
	}
	if err != nil {
		return acme.Order{}, err // the client's error says "creating order"
	}
	if created.Replaces != "" {
		log.Debug("order replaces a certificate", "order", created.URL, "replaces", created.Replaces)
	}
	return created, nil
}

// replacesRefused reports whether a newOrder error may be due to the
// replaces field: alreadyReplaced (RFC 9773 §5), or a malformed,
// unauthorized or internal-error problem (how CAs answer a CertID they
// cannot match), or a detail that names the field. Rate limits are never
// retried.
func replacesRefused(err error) bool {
	p := problemOf(err)
	if p == nil || p.Type == acme.ProblemRateLimited {
		return false
	}
	switch p.Type {
	case acme.ProblemAlreadyReplaced, acme.ProblemMalformed, acme.ProblemUnauthorized, acme.ProblemServerInternal:
		return true
	}
	d := strings.ToLower(p.Detail)
	return strings.Contains(d, "replace") || strings.Contains(d, "certid")
}

// certKey returns the previous version's key when the certificate reuses
// keys and the type still matches, else a new key.
func (e *Engine) certKey(cert *config.Certificate, prev *store.Version) (crypto.Signer, bool, error) {
	if cert.ReuseKey && prev != nil && prev.KeyPEM != nil {
		if k, err := parseKeyPEM(prev.KeyPEM); err == nil && keyType(k.Public()) == cert.KeyType {
			return k, true, nil
		}
	}
	k, err := generateKey(cert.KeyType)
	return k, false, err
}

// deploy writes the output copies of version v and raises t (issued or
// renew) to the hooks, then records the outcome: on failure the deploy is
// pending and the result's error wraps ErrDeploy.
func (e *Engine) deploy(ctx context.Context, j *job, v *store.Version, leaf *x509.Certificate, t event.Type, prevSerial string, res Result) Result {
	var err error
	if e.dryRun {
		e.skipOutputs(j)
	} else {
		err = writeOutputs(j.cert, v)
	}
	if err == nil {
		err = e.raise(ctx, j.cert, e.deployEvent(t, j.cert, v, leaf, prevSerial))
	}
	ev := MetaEvent{Time: e.now(), Name: string(t), Result: "ok", Version: v.ID}
	meta := j.meta
	meta.PendingDeploy = err != nil
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrDeploy, err)
		ev.Result, ev.Detail = "error", err.Error()
		if ctx.Err() != nil {
			j.log.Warn("stopping: deploy interrupted; the certificate is kept and the next run deploys it", "version", v.ID, "error", err)
		} else {
			j.log.Error("deploy failed; the certificate is kept and the deploy will be retried on the next run", "version", v.ID, "error", err)
		}
		res.Err = err
	} else {
		j.log.Info("certificate deployed", "event", string(t), "version", v.ID)
	}
	meta.Events = append(meta.Events, ev)
	// Recorded even when the run is being stopped, so the pending deploy
	// and its event survive a SIGTERM during the scripts. In a fleet, each
	// node records its own deploy; only the owner writes the metadata.
	sctx := context.WithoutCancel(ctx)
	if rerr := e.recordDeploy(sctx, j.cert.Name, v, err); rerr != nil {
		res.Err = errors.Join(res.Err, rerr)
	}
	if j.owner == "" {
		if serr := e.saveMeta(sctx, j.cert.Name, meta); serr != nil {
			res.Err = errors.Join(res.Err, fmt.Errorf("saving metadata: %w", serr))
		}
	}
	if res.Err == nil {
		res.nextCheck = e.afterDeploy(j, v, meta)
	}
	return res
}

// afterDeploy is the next check of j's certificate once version v is
// stored and deployed and every write of the job is done, meta being its
// metadata as written: what reading the state back would decide, without
// the reads.
func (e *Engine) afterDeploy(j *job, v *store.Version, meta *Meta) time.Time {
	return e.decide(j.cert, v, false, meta, false).NextCheck
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

// currentEventCertificate describes cert's stored current certificate for
// the failed, user-action-required and renewal-held events, so an alert
// can say how long the certificate in service has left; nil when there is
// none.
func (e *Engine) currentEventCertificate(ctx context.Context, cert *config.Certificate) *event.Certificate {
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
	return current
}

// redeploy retries the pending deploy of the current version without a
// new order: the event that failed (issued or renew) is raised again.
func (e *Engine) redeploy(ctx context.Context, j *job, res Result) Result {
	v := j.current
	// The previous version, if any, makes this a renew; an event recorded
	// for v says which one failed.
	t, prevSerial := event.Issued, ""
	if ids, err := e.store.Versions(ctx, j.cert.Name); err == nil && len(ids) > 1 {
		t = event.Renew
		if i := slices.Index(ids, v.ID); i > 0 {
			if pv, err := e.store.LoadVersion(ctx, j.cert.Name, ids[i-1]); err == nil {
				prevSerial = pv.Info.Serial
			}
		}
	}
	for i := len(j.meta.Events) - 1; i >= 0; i-- {
		ev := j.meta.Events[i]
		if ev.Version == v.ID && (ev.Name == string(event.Issued) || ev.Name == string(event.Renew)) {
			t = event.Type(ev.Name)
			break
		}
	}
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		return e.failed(ctx, j, res, err)
	}
	res = e.deploy(ctx, j, v, leaf, t, prevSerial, res)
	if res.Err == nil {
		res.Action = ActionDeployed
	}
	return res
}

// failed records err for j, raises failed to its hooks and returns res
// marked failed. A run stopped from outside (SIGTERM) only abandons the
// order: that is not the certificate's failure, so nothing is raised or
// recorded and no backoff is earned.
func (e *Engine) failed(ctx context.Context, j *job, res Result, err error) Result {
	res.Action, res.Err = ActionFailed, err
	if cause := context.Cause(ctx); lockLost(err) || lockLost(cause) {
		// Not the certificate's failure: this node lost its lock (its
		// lease expired while it was paused or cut off), and the node
		// that took it over carries on. Nothing is raised or recorded.
		if lockLost(cause) {
			res.Err = cause
		}
		j.lockLost(res.Err)
		return res
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		j.log.Warn("stopping: order abandoned; the next run orders again", "error", err)
		return res
	}
	attrs := []any{"error", err}
	if p := problemOf(err); p != nil {
		attrs = append(attrs, "problem_type", p.Type, "problem_detail", p.Detail)
	}
	j.log.Error("certificate failed", attrs...)
	sctx := context.WithoutCancel(ctx)
	current := e.currentEventCertificate(sctx, j.cert)
	e.userActionRequired(sctx, j, current, err)
	if serr := e.raise(sctx, j.cert, event.NewFailed(j.cert.Name, domains(j.cert), current, err)); serr != nil {
		j.log.Warn("failed script failed", "error", serr)
	}
	meta := j.meta
	if meta == nil || j.owner != "" {
		return res // another node owns the certificate's state
	}
	// A failure before any request to the CA (the state, a plugin that
	// cannot start or cannot solve an identifier) is not the CA's: it earns
	// no backoff, so the next run after the fix orders at once.
	if !errors.As(err, new(*localError)) {
		e.recordFailure(meta, err)
	}
	meta.Events = append(meta.Events, MetaEvent{Time: e.now(), Name: string(event.Failed), Result: "error", Detail: err.Error()})
	if serr := e.saveMeta(sctx, j.cert.Name, meta); serr != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("saving metadata: %w", serr))
	}
	return res
}

// recordFailure notes a failed attempt in the lineage's renewal state:
// the backoff grows with jitter, and a Retry-After from the CA (a
// rateLimited problem) is waited for.
func (e *Engine) recordFailure(meta *Meta, err error) {
	f := renewal.Failure{Err: err.Error()}
	if p := problemOf(err); p != nil {
		f.ProblemType, f.RetryAfter = p.Type, p.RetryAfter
	}
	// A wait the CA's Retry-After would have outlasted (order_timeout)
	// makes the CA's time the earliest next attempt.
	var pe *acme.PollError
	if errors.As(err, &pe) && !pe.RetryAt.IsZero() {
		f.RetryAfter = max(f.RetryAfter, time.Until(pe.RetryAt))
	}
	meta.Renewal.RecordFailure(f, e.now(), nil)
}

// writeOutputs writes the optional copies of v (config output.*), each
// atomically; the key with mode 0600, the rest 0644.
func writeOutputs(cert *config.Certificate, v *store.Version) error {
	var errs []error
	for _, o := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{cert.Output.Cert, v.CertPEM, 0o644},
		{cert.Output.Chain, v.ChainPEM, 0o644},
		{cert.Output.Fullchain, v.Fullchain(), 0o644},
		{cert.Output.Key, v.KeyPEM, 0o600},
	} {
		if o.path == "" {
			continue
		}
		if err := store.WriteFileAtomic(o.path, o.data, o.mode); err != nil {
			errs = append(errs, fmt.Errorf("writing %s: %w", o.path, err))
		}
	}
	return errors.Join(errs...)
}

// localError marks a failure before any request to the CA.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("parsing stored certificate: no CERTIFICATE PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing stored certificate: %w", err)
	}
	return c, nil
}

func domains(cert *config.Certificate) []string {
	out := make([]string, len(cert.Identifiers))
	for i, id := range cert.Identifiers {
		out[i] = id.Value
	}
	return out
}

// certNames returns the names a certificate was issued for (its DNS
// subjectAltNames in lower case, then its IP addresses), which
// VerifyCertificate has found equal to the requested identifiers.
func certNames(leaf *x509.Certificate) []string {
	var names []string
	for _, n := range leaf.DNSNames {
		names = append(names, strings.ToLower(n))
	}
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}
