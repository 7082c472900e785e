package acme

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultPollTimeout bounds each wait for an order or an authorization
// (WaitOrder, WaitAuthorization, the polling of FinalizeOrder) unless
// Client.PollTimeout says otherwise; the caller's context may bound it
// sooner.
const DefaultPollTimeout = 2 * time.Minute

// PollError is a wait for an order or an authorization that ended before
// the object reached a final state: the deadline (the caller's or
// Client.PollTimeout) came, the caller cancelled, or the server asked to
// retry later than the deadline (RetryAfter, RetryAt).
type PollError struct {
	// Kind is "order" or "authorization"; URL is the object's URL.
	Kind, URL string
	// Identifier is the authorization's identifier as ordered, if known.
	Identifier Identifier
	// Status is the last state seen ("pending", "processing", ...), ""
	// if no poll answered.
	Status string
	// Waited is how long the wait lasted; Polls how many requests it sent.
	Waited time.Duration
	Polls  int
	// RetryAfter is the server's Retry-After that would have outlasted
	// the deadline, zero when the wait simply ran out of time; RetryAt is
	// that time on our clock, the earliest moment worth trying again.
	RetryAfter time.Duration
	RetryAt    time.Time
	// Err is context.DeadlineExceeded or context.Canceled.
	Err error
}

// Error reads "acme: order https://… still processing after 2m0s (24
// polls): context deadline exceeded", or with a Retry-After "acme:
// authorization of example.com still pending after 1.2s (3 polls): the
// CA asks to retry in 1000000000s (at 2058-01-01T00:00:00Z), past the
// deadline in 1m58s".
func (e *PollError) Error() string {
	what := e.Kind + " " + e.URL
	if e.Identifier.Value != "" {
		what = e.Kind + " of " + e.Identifier.Value
	}
	state := "still " + e.Status
	if e.Status == "" {
		state = "not final"
	}
	s := fmt.Sprintf("acme: %s %s after %s (%d polls)", what, state, e.Waited.Round(time.Millisecond), e.Polls)
	if e.RetryAfter > 0 {
		return s + fmt.Sprintf(": the CA asks to retry in %s (at %s), past the deadline: %v", e.RetryAfter, e.RetryAt.UTC().Format(time.RFC3339), e.Err)
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the context's error.
func (e *PollError) Unwrap() error { return e.Err }

// pollTarget names what poll waits for, for its *PollError.
type pollTarget struct {
	kind, url string
	id        Identifier
	// status is the state known before the first poll, if any.
	status string
}

// poll calls check after a backoff until it reports done or fails. The
// first wait is first if non-zero (a Retry-After), otherwise
// PollInterval; then PollInterval doubles up to MaxPollInterval, and a
// Retry-After from the server replaces it. The whole wait is bounded by
// ctx and PollTimeout: when the bound comes, or the next wait would
// outlast it, poll returns a *PollError at once. check gets the bounded
// context and returns the status seen and the server's Retry-After.
func (c *Client) poll(ctx context.Context, t pollTarget, first time.Duration, check func(context.Context) (status string, retryAfter time.Duration, done bool, err error)) error {
	timeout := c.PollTimeout
	if timeout <= 0 {
		timeout = DefaultPollTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := c.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	maxInterval := c.MaxPollInterval
	if maxInterval <= 0 {
		maxInterval = DefaultMaxPollInterval
	}
	start := time.Now()
	status, polls := t.status, 0
	fail := func(retryAfter time.Duration, err error) error {
		e := &PollError{Kind: t.kind, URL: t.url, Identifier: t.id, Status: status, Waited: time.Since(start), Polls: polls, Err: err}
		if retryAfter > 0 {
			e.RetryAfter, e.RetryAt = retryAfter, time.Now().Add(retryAfter)
		}
		return e
	}
	wait, serverWait := interval, first
	if first > 0 {
		wait = first
	}
	for {
		if dl, _ := ctx.Deadline(); time.Until(dl) < wait {
			// Waiting would outlive the bound: give up now, not at the deadline.
			return fail(serverWait, context.DeadlineExceeded)
		}
		if err := sleep(ctx, wait); err != nil {
			return fail(0, err)
		}
		st, retryAfter, done, err := check(ctx)
		polls++
		if st != "" {
			status = st
		}
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return fail(0, ctx.Err())
		}
		if done || err != nil {
			return err
		}
		interval = min(interval*2, maxInterval)
		wait, serverWait = interval, retryAfter
		if retryAfter > 0 {
			wait = retryAfter
		}
	}
}
