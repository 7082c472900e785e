package renewal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Timing constants of the renewal policy.
const (
	// DefaultARIRetry is how long to wait before fetching renewal information
	// again when the CA sent no Retry-After (RFC 9773 §4.3).
	DefaultARIRetry = 6 * time.Hour
	// MinARIRetry and MaxARIRetry bound the CA's Retry-After for renewal
	// information, so neither a tiny nor a huge value is obeyed blindly.
	MinARIRetry = time.Minute
	MaxARIRetry = 24 * time.Hour
	// ARIErrorRetry is the wait after a failed or malformed renewalInfo
	// response that carried no Retry-After.
	ARIErrorRetry = time.Hour
	// MaxFirstARIDelay bounds how long after its notBefore a new
	// certificate's renewal information is first fetched (see
	// FirstARIFetch): a CA that must revoke certificates early (within 5
	// days of an incident under the CA/B Forum Baseline Requirements)
	// announces it through ARI, and a first look within 3 days leaves time
	// to renew before such a revocation.
	MaxFirstARIDelay = 3 * 24 * time.Hour

	// BackoffBase is the wait after the first failed renewal; it doubles with
	// every further consecutive failure up to BackoffCap. Each wait is then
	// spread by ±BackoffJitter (a fraction) so lineages that failed together
	// do not retry together.
	BackoffBase   = 5 * time.Minute
	BackoffCap    = 6 * time.Hour
	BackoffJitter = 0.2
	// MaxFailureRetryAfter bounds the Retry-After of a failed order (for
	// example a rateLimited problem, RFC 8555 §6.6) that is obeyed.
	MaxFailureRetryAfter = 7 * 24 * time.Hour
)

// ProblemRateLimited is the ACME problem type of a rate-limited request,
// RFC 8555 §6.7.
const ProblemRateLimited = "urn:ietf:params:acme:error:rateLimited"

// ErrMalformedWindow is returned (wrapped) by [State.RecordARI] for a
// suggested window that cannot be used.
var ErrMalformedWindow = errors.New("renewal: malformed ARI suggested window")

// Window is a suggested renewal window, the suggestedWindow of a renewalInfo
// response (RFC 9773 §4.2).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// IsZero reports whether no window is set.
func (w Window) IsZero() bool { return w.Start.IsZero() && w.End.IsZero() }

// Equal reports whether both windows start and end at the same instants.
func (w Window) Equal(o Window) bool { return w.Start.Equal(o.Start) && w.End.Equal(o.End) }

// check returns why w cannot be used, or nil: RFC 9773 §4.2 requires both
// bounds and an end after the start.
func (w Window) check() error {
	switch {
	case w.Start.IsZero() || w.End.IsZero():
		return fmt.Errorf("%w: missing start or end", ErrMalformedWindow)
	case !w.End.After(w.Start):
		return fmt.Errorf("%w: end %s is not after start %s", ErrMalformedWindow, fmtTime(w.End), fmtTime(w.Start))
	}
	return nil
}

// contains reports whether t lies in [Start, End).
func (w Window) contains(t time.Time) bool { return !t.Before(w.Start) && t.Before(w.End) }

// String formats the window in UTC to the minute.
func (w Window) String() string {
	return w.Start.UTC().Format(timeLayout) + " – " + fmtTime(w.End)
}

// ARIResponse is one successful renewalInfo fetch (RFC 9773 §4.2), as the
// engine's ACME client decoded it.
type ARIResponse struct {
	Window         Window
	ExplanationURL string
	// RetryAfter is the response's Retry-After header; 0 when absent.
	RetryAfter time.Duration
}

// Failure describes one failed renewal attempt.
type Failure struct {
	// Err is the error as text.
	Err string
	// ProblemType is the ACME problem type (RFC 8555 §6.7), empty when the
	// error was not an ACME problem.
	ProblemType string
	// RetryAfter is the Retry-After that came with the error; 0 when absent.
	RetryAfter time.Duration
}

// State is what the engine stores for one certificate lineage between runs
// (in its metadata file) so that decisions are stable: the ARI window and
// the time chosen inside it, failures and their backoff, recent orders for
// the reissue guard. Update it only through the Record methods; the zero
// value is a lineage with no history.
type State struct {
	// ARIWindow is the last usable suggested window, ARIChosen the instant
	// picked uniformly inside it (RFC 9773 §4.2), kept while the window does
	// not change.
	ARIWindow         Window    `json:"ari_window,omitzero"`
	ARIChosen         time.Time `json:"ari_chosen,omitzero"`
	ARIExplanationURL string    `json:"ari_explanation_url,omitempty"`
	// ARINextFetch is when renewal information should be fetched again;
	// zero means as soon as possible.
	ARINextFetch time.Time `json:"ari_next_fetch,omitzero"`
	// ARIError is why the last fetch gave no usable window; empty after a
	// good one.
	ARIError string `json:"ari_error,omitempty"`

	// Failures counts consecutive failed renewals; RetryAt is the end of the
	// backoff they earned.
	Failures        int       `json:"consecutive_failures,omitempty"`
	LastError       string    `json:"last_error,omitempty"`
	LastProblemType string    `json:"last_problem_type,omitempty"`
	LastFailure     time.Time `json:"last_failure,omitzero"`
	RetryAt         time.Time `json:"retry_at,omitzero"`
	LastSuccess     time.Time `json:"last_success,omitzero"`

	// Orders holds when recent orders were placed, for the reissue guard.
	Orders []time.Time `json:"recent_orders,omitempty"`

	// Revoked is set when the current certificate is known to be revoked.
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// RecordARI stores a renewalInfo response fetched at now. A new window gets a
// time chosen uniformly at random inside it from rng (nil: the global
// source); an unchanged window keeps its chosen time, so repeated fetches do
// not move the renewal (RFC 9773 §4.2). The next fetch is due after the
// Retry-After, clamped to [MinARIRetry, MaxARIRetry] (DefaultARIRetry when
// absent).
//
// A malformed window is not stored: the previous window, if any, stays in
// force, the problem is kept in ARIError, and the returned error wraps
// ErrMalformedWindow. The state is updated either way; the error is for
// logging.
func (s *State) RecordARI(r ARIResponse, now time.Time, rng *rand.Rand) error {
	if err := r.Window.check(); err != nil {
		s.ARIError = err.Error()
		s.ARINextFetch = now.Add(clamp(r.RetryAfter, ARIErrorRetry))
		return err
	}
	if !s.ARIWindow.Equal(r.Window) || !r.Window.contains(s.ARIChosen) {
		span := int64(r.Window.End.Sub(r.Window.Start))
		var off int64
		if rng != nil {
			off = rng.Int64N(span)
		} else {
			off = rand.Int64N(span)
		}
		s.ARIChosen = r.Window.Start.Add(time.Duration(off))
	}
	s.ARIWindow = r.Window
	s.ARIExplanationURL = r.ExplanationURL
	s.ARIError = ""
	s.ARINextFetch = now.Add(clamp(r.RetryAfter, DefaultARIRetry))
	return nil
}

// RecordARIError stores a failed renewalInfo fetch: err (non-nil) is kept
// for explanations, the last good window stays in force, and the next fetch
// is due after retryAfter clamped as in RecordARI (ARIErrorRetry when 0).
// An ARI failure never delays a renewal: without a window the lifetime rule
// applies.
func (s *State) RecordARIError(err error, retryAfter time.Duration, now time.Time) {
	s.ARIError = err.Error()
	s.ARINextFetch = now.Add(clamp(retryAfter, ARIErrorRetry))
}

// clamp bounds an ARI Retry-After to [MinARIRetry, MaxARIRetry]; 0 (absent)
// becomes def.
func clamp(retryAfter, def time.Duration) time.Duration {
	if retryAfter <= 0 {
		return def
	}
	return min(max(retryAfter, MinARIRetry), MaxARIRetry)
}

// RecordFailure stores a failed renewal at now and sets the backoff: after n
// consecutive failures BackoffBase·2^(n-1), capped at BackoffCap, spread by
// ±BackoffJitter drawn from rng (nil: the global source). A longer
// Retry-After from the CA (as a rateLimited problem carries, RFC 8555 §6.6)
// wins, up to MaxFailureRetryAfter.
func (s *State) RecordFailure(f Failure, now time.Time, rng *rand.Rand) {
	s.Failures++
	s.LastError = f.Err
	s.LastProblemType = f.ProblemType
	s.LastFailure = now
	wait := backoff(s.Failures, rng)
	if ra := min(f.RetryAfter, MaxFailureRetryAfter); ra > wait {
		wait = ra
	}
	s.RetryAt = now.Add(wait)
}

// backoff is the jittered wait after n ≥ 1 consecutive failures.
func backoff(n int, rng *rand.Rand) time.Duration {
	d := BackoffBase
	for i := 1; i < n && d < BackoffCap; i++ {
		d *= 2
	}
	d = min(d, BackoffCap)
	var u float64
	if rng != nil {
		u = rng.Float64()
	} else {
		u = rand.Float64()
	}
	return time.Duration(float64(d) * (1 - BackoffJitter + 2*BackoffJitter*u))
}

// RecordSuccess stores a successful renewal at now, whose new certificate
// is c: failures and backoff are cleared, and so is everything about the
// replaced certificate (its ARI window, its revocation). Recent orders are
// kept for the reissue guard. The new certificate's renewal information is
// first fetched at FirstARIFetch, not at once: its window is far away, so
// the run that issued it needs no renewalInfo request.
func (s *State) RecordSuccess(now time.Time, c Certificate) {
	orders := s.Orders
	*s = State{Orders: orders, LastSuccess: now, ARINextFetch: FirstARIFetch(c.NotBefore, c.NotAfter)}
}

// FirstARIFetch is when renewal information is first fetched for a
// certificate valid from notBefore to notAfter: a third of its lifetime
// after notBefore, at most MaxFirstARIDelay after it. CAs suggest windows
// around 2/3 of the lifetime (the lifetime rule's default too), so the
// first fetch still comes well before the window; only a CA's early
// renewal signal could be learnt sooner, and MaxFirstARIDelay bounds how
// much later. Zero when the validity is unknown or malformed: fetch as
// soon as possible.
//
// RFC 9773 §4.3 suggests fetching right after issuance; acmehook trades
// that request (one of ten for a one-name certificate) for this delay.
func FirstARIFetch(notBefore, notAfter time.Time) time.Time {
	if notBefore.IsZero() || !notAfter.After(notBefore) {
		return time.Time{}
	}
	return notBefore.Add(min(notAfter.Sub(notBefore)/3, MaxFirstARIDelay))
}

// RecordOrder notes that an order for this lineage was placed at now; call it
// before each new-order request, whatever its outcome, so the reissue guard
// counts it. Orders older than the longest allowed guard window are dropped.
func (s *State) RecordOrder(now time.Time) {
	cutoff := now.Add(-maxOrdersWindowCeiling)
	s.Orders = slices.DeleteFunc(s.Orders, func(t time.Time) bool { return !t.After(cutoff) })
	s.Orders = append(s.Orders, now)
	if extra := len(s.Orders) - maxOrdersCeiling; extra > 0 {
		slices.SortFunc(s.Orders, time.Time.Compare)
		s.Orders = slices.Delete(s.Orders, 0, extra)
	}
}

// RecordRevoked notes that the current certificate was revoked at now (by
// this client, or as learnt otherwise); it is then due for renewal at once.
func (s *State) RecordRevoked(now time.Time) {
	s.Revoked = true
	s.RevokedAt = now
}
