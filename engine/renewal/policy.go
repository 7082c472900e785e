// Package renewal decides when a certificate lineage should be renewed and
// explains why. It is pure logic: no I/O, time and randomness are passed in.
//
// The engine keeps one [State] per lineage, feeds it what happened
// ([State.RecordARI], [State.RecordFailure], [State.RecordOrder],
// [State.RecordSuccess], [State.RecordRevoked]) and asks [Policy.Decide]
// what to do now and when to look again.
//
// The schedule, in order of precedence: a revoked certificate is renewed at
// once; otherwise at the time chosen inside the CA's ACME Renewal
// Information window (RFC 9773); otherwise by the lifetime rule (2/3 of the
// lifetime, 1/2 under 10 days, or the per-certificate renew_before). A
// failure backoff and the reissue guard can only postpone that time, never
// advance it.
package renewal

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Reissue guard defaults and limits.
const (
	DefaultMaxOrders       = 5
	DefaultMaxOrdersWindow = 24 * time.Hour
	// maxOrdersCeiling and maxOrdersWindowCeiling bound the configurable
	// guard, and so the order history a State keeps.
	maxOrdersCeiling       = 100
	maxOrdersWindowCeiling = 7 * 24 * time.Hour
)

// shortLived is the lifetime under which the default rule renews at 1/2
// instead of 2/3 of the lifetime.
const shortLived = 10 * 24 * time.Hour

// ErrPolicy is wrapped by every error of [Policy.Validate].
var ErrPolicy = errors.New("renewal: invalid policy")

// PolicyError is one setting of a [Policy] out of range, named by its TOML
// key, so that the configuration loader can report it at the key's line.
// It wraps [ErrPolicy].
type PolicyError struct {
	Key     string // renew_before, max_orders or max_orders_window
	Value   string // the value as the message shows it
	Message string // what is wrong with it
}

// Error returns "renewal: invalid policy: KEY VALUE MESSAGE".
func (e *PolicyError) Error() string {
	return fmt.Sprintf("%v: %s %s %s", ErrPolicy, e.Key, e.Value, e.Message)
}

// Unwrap returns ErrPolicy.
func (e *PolicyError) Unwrap() error { return ErrPolicy }

// Policy is the per-certificate renewal configuration. The zero value is the
// default policy.
type Policy struct {
	// RenewBefore overrides the default lifetime rule (TOML renew_before).
	RenewBefore RenewBefore
	// MaxOrders is how many orders the lineage may place within
	// MaxOrdersWindow (TOML max_orders, max_orders_window); 0 means
	// DefaultMaxOrders and DefaultMaxOrdersWindow.
	MaxOrders       int
	MaxOrdersWindow time.Duration
}

// Validate reports every problem of p at once, each a *[PolicyError].
func (p Policy) Validate() error {
	var errs []error
	if p.MaxOrders < 0 || p.MaxOrders > maxOrdersCeiling {
		errs = append(errs, &PolicyError{"max_orders", fmt.Sprint(p.MaxOrders), fmt.Sprintf("must be between 1 and %d (0 for the default %d)", maxOrdersCeiling, DefaultMaxOrders)})
	}
	if p.MaxOrdersWindow < 0 || p.MaxOrdersWindow > maxOrdersWindowCeiling {
		errs = append(errs, &PolicyError{"max_orders_window", p.MaxOrdersWindow.String(), fmt.Sprintf("must be positive and at most %s (0 for the default %s)", maxOrdersWindowCeiling, DefaultMaxOrdersWindow)})
	}
	if d, f := p.RenewBefore.Duration, p.RenewBefore.Fraction; d < 0 || f < 0 || f >= 1 || (d != 0 && f != 0) {
		errs = append(errs, &PolicyError{"renew_before", fmt.Sprintf("%q", p.RenewBefore), "must be a positive duration or a fraction between 0 and 1, not both"})
	}
	return errors.Join(errs...)
}

func (p Policy) guard() (int, time.Duration) {
	n, w := p.MaxOrders, p.MaxOrdersWindow
	if n == 0 {
		n = DefaultMaxOrders
	}
	if w == 0 {
		w = DefaultMaxOrdersWindow
	}
	return n, w
}

// Certificate is what the engine knows of a lineage's current certificate.
type Certificate struct {
	// NotBefore and NotAfter are the certificate's validity; both zero when
	// the lineage has no certificate yet.
	NotBefore, NotAfter time.Time
	// ARI reports whether the CA offers renewal information (the directory
	// has renewalInfo, RFC 9773 §3).
	ARI bool
}

// Decide says whether the lineage is due for renewal at now, when it will
// be otherwise, why, and when to look again. It does not change st.
//
// When the decision asks to fetch renewal information (FetchARI), the
// engine records the outcome with [State.RecordARI] or
// [State.RecordARIError] and decides again; either moves ARINextFetch
// forward, so a daemon never spins on a failing fetch.
func (p Policy) Decide(st State, c Certificate, now time.Time) Decision {
	d := Decision{now: now, facts: make([]fact, 0, 6)}

	at, reason := p.schedule(st, c, now, &d)

	if st.Failures > 0 {
		failures := plural(st.Failures, "consecutive failure")
		what := fmt.Sprintf("backing off after %s until %s", failures, fmtTime(st.RetryAt))
		if st.LastProblemType == ProblemRateLimited {
			what = fmt.Sprintf("rate limited by the CA, waiting after %s until %s", failures, fmtTime(st.RetryAt))
		}
		d.factf("last error", func() string {
			return fmt.Sprintf("%s (%s) at %s", st.LastError, orNone(st.LastProblemType), fmtTime(st.LastFailure))
		})
		if !st.RetryAt.After(now) {
			what = fmt.Sprintf("retrying after %s, backoff ended at %s", failures, fmtTime(st.RetryAt))
		}
		d.fact("backoff", what)
		if st.RetryAt.After(at) {
			at, reason = st.RetryAt, what
		}
	}

	limit, window := p.guard()
	count, free := guardState(st.Orders, limit, window, now)
	if count >= limit {
		what := fmt.Sprintf("%d orders in the last %s (limit %d), next order allowed at %s",
			count, fmtWindow(window), limit, fmtTime(free))
		d.fact("reissue guard", what)
		if free.After(at) {
			at, reason = free, "reissue guard: "+what
		}
	} else {
		d.factf("reissue guard", func() string {
			return fmt.Sprintf("%d of %d orders in the last %s", count, limit, fmtWindow(window))
		})
	}

	d.At, d.Reason = at, reason
	d.Due = !at.After(now)
	d.NextCheck = now
	if !d.Due {
		d.NextCheck = at
	}
	if c.ARI && !c.NotAfter.IsZero() {
		if next := st.ARINextFetch; next.After(now) {
			d.NextCheck = minTime(d.NextCheck, next)
		} else {
			d.FetchARI = true
			d.NextCheck = now
		}
	}
	return d
}

// schedule is the renewal time before backoff and guard, and why.
func (p Policy) schedule(st State, c Certificate, now time.Time, d *Decision) (time.Time, string) {
	if c.NotAfter.IsZero() {
		return now, "no certificate issued yet"
	}
	if !c.NotAfter.After(c.NotBefore) {
		return now, fmt.Sprintf("certificate validity is malformed (not before %s, not after %s)", fmtTime(c.NotBefore), fmtTime(c.NotAfter))
	}
	// RFC 5280 §4.1.2.5: both bounds are inclusive.
	life := c.NotAfter.Sub(c.NotBefore) + time.Second
	d.factf("certificate", func() string {
		return fmt.Sprintf("valid %s – %s (%s lifetime)", c.NotBefore.UTC().Format(timeLayout), fmtTime(c.NotAfter), fmtLife(life))
	})

	lifeAt, lifeReason := p.lifetimeRule(c, life)
	d.factf("lifetime rule", func() string { return fmt.Sprintf("%s → %s", lifeReason, fmtTime(lifeAt)) })
	at, reason := lifeAt, lifeReason

	if ari, ok := ariRule(st, c, d); ok {
		at, reason = ari, fmt.Sprintf("ARI window %s, chosen time %s", st.ARIWindow, fmtTime(ari))
	}
	if st.ARIError != "" {
		d.fact("ARI error", st.ARIError)
	}
	if c.ARI && !st.ARINextFetch.IsZero() {
		next := st.ARINextFetch
		d.factf("ARI next fetch", func() string { return fmtTime(next) })
	}
	if !now.Before(c.NotAfter) {
		at, reason = minTime(at, now), "certificate expired at "+fmtTime(c.NotAfter)
	}
	if st.Revoked {
		what := "certificate was revoked"
		if !st.RevokedAt.IsZero() {
			what += " at " + fmtTime(st.RevokedAt)
		}
		d.fact("revoked", "the "+what)
		at, reason = minTime(at, now), what
	}
	return at, reason
}

// lifetimeRule is the renewal time without ARI: renew_before if set and
// usable, else 2/3 of the lifetime (1/2 under 10 days).
func (p Policy) lifetimeRule(c Certificate, life time.Duration) (time.Time, string) {
	rb := p.RenewBefore
	switch {
	case rb.Duration > 0 && rb.Duration < life:
		return c.NotAfter.Add(-rb.Duration), fmt.Sprintf("renew_before %s: %s before expiry", rb, fmtDur(rb.Duration))
	case rb.Fraction > 0:
		left := time.Duration(float64(life) * rb.Fraction)
		return c.NotBefore.Add(life - left), fmt.Sprintf("renew_before %s: when %s of the %s lifetime remains", rb, fmtDur(left), fmtLife(life))
	}
	var at time.Time
	var reason string
	if life < shortLived {
		at, reason = c.NotBefore.Add(life/2), fmt.Sprintf("1/2 of %s lifetime (under 10 days)", fmtLife(life))
	} else {
		at, reason = c.NotBefore.Add(life/3*2+life%3*2/3), fmt.Sprintf("2/3 of %s lifetime", fmtLife(life))
	}
	if rb.Duration > 0 {
		reason += fmt.Sprintf(" (renew_before %s ignored: not shorter than the lifetime)", rb)
	}
	return at, reason
}

// ariRule is the chosen time of a usable ARI window in st, noting the
// window in d.
func ariRule(st State, c Certificate, d *Decision) (time.Time, bool) {
	if st.ARIWindow.check() != nil {
		if c.ARI {
			d.fact("ARI", "no usable window yet; the lifetime rule applies")
		} else {
			d.fact("ARI", "not offered by the CA; the lifetime rule applies")
		}
		return time.Time{}, false
	}
	chosen := st.ARIChosen
	if !st.ARIWindow.contains(chosen) {
		chosen = st.ARIWindow.Start
	}
	d.fact("ARI window", st.ARIWindow.String())
	if st.ARIExplanationURL != "" {
		d.fact("ARI explanation", st.ARIExplanationURL)
	}
	if !chosen.Before(c.NotAfter) {
		d.fact("ARI", fmt.Sprintf("ignored: chosen time %s is not before expiry; the lifetime rule applies", fmtTime(chosen)))
		return time.Time{}, false
	}
	d.fact("ARI chosen time", fmtTime(chosen))
	return chosen, true
}

// guardState counts the orders within window before now (orders stamped in
// the future, after a clock jump backwards, count as placed now) and returns
// when the count will have dropped below limit.
func guardState(orders []time.Time, limit int, window time.Duration, now time.Time) (int, time.Time) {
	var in []time.Time
	for _, t := range orders {
		if t.After(now.Add(-window)) {
			in = append(in, minTime(t, now))
		}
	}
	if len(in) < limit {
		return len(in), now
	}
	slices.SortFunc(in, time.Time.Compare)
	return len(in), in[len(in)-limit].Add(window)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orNone(s string) string {
	if s == "" {
		return "no ACME problem type"
	}
	return s
}
