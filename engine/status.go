package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
)

// Next is what a run would do with a certificate.
type Next string

// What a run does with a certificate, decided by Engine.Status from the
// storage and the configuration alone.
const (
	// NextIssue: order the first certificate; none is stored.
	NextIssue Next = "issue"
	// NextRenew: order a replacement of the current certificate: it is due
	// (renewal window, lifetime, revocation), its key was moved aside, its
	// names, key type or profile no longer match the configuration, or the
	// order is forced.
	NextRenew Next = "renew"
	// NextRedeploy: retry the deploy of the current certificate, which an
	// earlier run stored but could not deploy.
	NextRedeploy Next = "redeploy"
	// NextHold: a new certificate is needed, but the failure backoff or the
	// reissue guard holds the order back until At.
	NextHold Next = "hold"
	// NextNone: the certificate is current; it is due at At.
	NextNone Next = "none"
)

// Status is what the engine knows of one certificate from the storage
// alone, and what a run would do with it now: `acmehook list` prints one
// per certificate, `acmehook explain` one with its facts, and Run and the
// daemon act on the same value.
type Status struct {
	// Name is the certificate's name in the configuration; Domains its
	// identifiers as configured.
	Name    string
	Domains []string
	// Next is what a run would do, Reason why, in one line.
	Next   Next
	Reason string
	// At is when the certificate is due (NextNone) or when the hold ends
	// (NextHold); zero when the run would act now.
	At time.Time
	// NextCheck is when the daemon looks at the certificate again.
	NextCheck time.Time
	// Current is the stored current certificate, nil when there is none.
	Current *CurrentCertificate
	// PendingDeploy reports that the current certificate's deploy failed
	// and is retried by the next run.
	PendingDeploy bool
	// LastEvent is the most recently recorded event, nil when none.
	LastEvent *MetaEvent
	// Decision is the renewal policy's decision for the current
	// certificate (lifetime, ARI window, revocation, backoff, guard), with
	// the facts `acmehook explain` prints.
	Decision renewal.Decision
	// Err is set when the certificate's stored state could not be read;
	// then only Name and Domains are set.
	Err error
}

// CurrentCertificate describes a stored current certificate.
type CurrentCertificate struct {
	Version   string // stored version ID
	Serial    string // lowercase hex
	Names     []string
	Issuer    string // issuer common name
	KeyType   string
	Profile   string
	NotBefore time.Time
	NotAfter  time.Time
	// KeyMovedAside reports that its key was moved aside (keyCompromise)
	// and is never used again.
	KeyMovedAside bool
}

// Due reports whether a run would order a new certificate now.
func (s Status) Due() bool { return s.Next == NextIssue || s.Next == NextRenew }

// String says in one line what a run would do, as `acmehook explain`
// begins: "renew now: ...", "hold until 2026-12-02 07:00 UTC: ...".
func (s Status) String() string {
	switch s.Next {
	case NextHold:
		return fmt.Sprintf("hold until %s: %s", s.At.UTC().Format("2006-01-02 15:04 MST"), s.Reason)
	case NextNone:
		return "nothing: " + s.Reason
	}
	return string(s.Next) + " now: " + s.Reason
}

// Explain is the status followed by every fact of the renewal decision,
// as `acmehook explain NAME` prints it.
func (s Status) Explain() string {
	return "next run: " + s.String() + "\n" + s.Decision.Explain()
}

// Status returns what a run would do with the certificate called name,
// from the storage and the configuration alone (the CA is not contacted).
func (e *Engine) Status(ctx context.Context, name string) (Status, error) {
	cert := e.cfg.Certificate(name)
	if cert == nil {
		return Status{}, fmt.Errorf("%w: %q", ErrUnknownCertificate, name)
	}
	j := e.load(ctx, cert, loadOptions{infoOnly: true})
	return j.status, j.status.Err
}

// List returns the Status of every configured certificate, in
// configuration order. A certificate whose state cannot be read has its
// Err set; the others are listed regardless.
func (e *Engine) List(ctx context.Context) []Status {
	out := make([]Status, len(e.cfg.Certificates))
	e.loadEach(ctx, e.cfg.Certificates, func(i int, j *job) { out[i] = j.status })
	return out
}

// ListWorkers is how many certificates List (and a metrics scrape) reads
// at once: reading a certificate's state is a handful of system calls
// that wait on the file system (or a round trip to etcd), so a few
// readers overlap those waits without crowding the run's own work.
const ListWorkers = 4

// loadEach loads every certificate of certs without contacting the CA,
// ListWorkers at a time, and hands each job to f with its index (f is
// called concurrently, for distinct indices).
func (e *Engine) loadEach(ctx context.Context, certs []*config.Certificate, f func(int, *job)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(ListWorkers, len(certs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(certs); i = int(next.Add(1) - 1) {
				f(i, e.load(ctx, certs[i], loadOptions{infoOnly: true}))
			}
		}()
	}
	wg.Wait()
}

// Explain returns the Status of the certificate called name, whose
// Explain method gives `acmehook explain`'s text.
func (e *Engine) Explain(ctx context.Context, name string) (Status, error) {
	return e.Status(ctx, name)
}

// decide is the one place that says what a run does with a certificate:
// the certificate as stored (v nil when there is none; aside when its key
// was moved aside), its state, the configuration and the engine's clock.
// Without force, a certificate that is missing, has lost its key, or no
// longer matches the configuration is ordered unless the failure backoff
// or the reissue guard holds the order back; otherwise the renewal
// decision says whether it is due; a pending deploy is retried.
func (e *Engine) decide(cert *config.Certificate, v *store.Version, aside bool, meta *Meta, force bool) Status {
	s := Status{Name: cert.Name, Domains: cert.Domains, PendingDeploy: meta.PendingDeploy}
	if n := len(meta.Events); n > 0 {
		ev := meta.Events[n-1]
		s.LastEvent = &ev
	}
	now := e.now()
	// The reissue guard protects a certificate in service from a CA or a
	// configuration that would have it reordered without end. With none in
	// service (none stored, expired, revoked, its key moved aside), only
	// the failure backoff holds an order back; the guard still counts it.
	st := meta.Renewal
	if !inService(v, aside, st, now) {
		st.Orders = nil
	}
	s.Decision = e.Decide(cert, v, st)
	hold := e.hold(cert, st)

	// need is why a new certificate is needed whatever the renewal policy
	// says.
	need, next := "", NextRenew
	switch {
	case v == nil:
		need, next = "no certificate yet", NextIssue
	case aside:
		need = "the key was moved aside"
	case !sameNames(v.Info.Names, domains(cert)):
		need = fmt.Sprintf("names changed from %s", strings.Join(v.Info.Names, ","))
	case v.Info.KeyType != string(cert.KeyType):
		need = fmt.Sprintf("key type changed from %s", v.Info.KeyType)
	case profileRequested(v.Info) != cert.ProfileSetting():
		need = fmt.Sprintf("profile changed from %q", profileRequested(v.Info))
	}
	if v != nil {
		s.Current = &CurrentCertificate{
			Version: v.ID, Serial: v.Info.Serial, Names: v.Info.Names, Issuer: v.Info.Issuer,
			KeyType: v.Info.KeyType, Profile: v.Info.Profile, NotBefore: v.Info.NotBefore, NotAfter: v.Info.NotAfter,
			KeyMovedAside: aside,
		}
	}
	d := s.Decision
	switch {
	case force:
		s.Next, s.Reason = next, "forced"
	case need != "" && hold.Due:
		s.Next, s.Reason = next, need
	case need != "":
		s.Next, s.Reason, s.At = NextHold, fmt.Sprintf("%s, but %s", need, hold.String()), hold.At
	case d.Due:
		s.Next, s.Reason = NextRenew, d.Reason
	case meta.PendingDeploy:
		s.Next, s.Reason = NextRedeploy, "deploy pending from an earlier run"
	case !hold.Due && d.At.Equal(hold.At):
		s.Next, s.Reason, s.At = NextHold, d.String(), d.At
	default:
		s.Next, s.Reason, s.At = NextNone, d.String(), d.At
	}

	// The daemon's next look: the decision's, or the end of a backoff or
	// guard that holds an order back, or a short while for a pending
	// deploy.
	at := d.NextCheck
	if !hold.Due {
		at = minTime(at, hold.At)
	}
	if s.Next == NextHold {
		// A held certificate is looked at as often as any other, so the
		// hold is reported (and an expiry before its end noticed) at a
		// normal cadence, not only when it ends.
		at = minTime(at, now.Add(HeldRecheck))
	}
	if meta.PendingDeploy {
		at = minTime(at, now.Add(renewal.BackoffBase))
	}
	s.NextCheck = at
	return s
}

// HeldRecheck is how often the daemon looks at a certificate whose order
// the backoff or the reissue guard holds back, at most.
const HeldRecheck = time.Hour

// inService reports whether v, the current version, is a certificate that
// can stay in service: stored, with its key, not revoked and not expired.
func inService(v *store.Version, aside bool, st renewal.State, now time.Time) bool {
	return v != nil && !aside && !st.Revoked && now.Before(v.Info.NotAfter)
}

// loadOptions say how load prepares a job.
type loadOptions struct {
	// force orders a new certificate whatever the decision (issue NAME).
	force bool
	// fetchARI lets load ask the CA for renewal information first when
	// the renewal decision asks for it (run and the daemon do; list and
	// explain never contact the CA).
	fetchARI bool
	// infoOnly reads the current version without its PEM files: enough to
	// decide and report (list, explain, metrics, the daemon's next
	// check), not to act on the certificate.
	infoOnly bool
}
