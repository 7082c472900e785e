package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
)

// Decide applies cert's renewal policy to version v (nil when there is no
// certificate yet) and the lineage's stored renewal state at the engine's
// clock. Renewal information counts as offered whenever there is a
// certificate: a CA without it is recorded as an ARI error and asked again
// a day later, so the decision never waits on it.
func (e *Engine) Decide(cert *config.Certificate, v *store.Version, st renewal.State) renewal.Decision {
	pol := cert.Policy()
	var c renewal.Certificate
	if v != nil {
		c = renewal.Certificate{NotBefore: v.Info.NotBefore, NotAfter: v.Info.NotAfter, ARI: true}
	}
	return pol.Decide(st, c, e.now())
}

// hold is the decision of the failure backoff and reissue guard alone: it
// is not Due when either holds an order back, whatever the reason for the
// order (names changed, no certificate yet ...).
func (e *Engine) hold(cert *config.Certificate, st renewal.State) renewal.Decision {
	return e.Decide(cert, nil, st)
}

// fetchARI asks the CA for the renewal information of v (RFC 9773 §4.2)
// and records the outcome in st. It never fails: an error is recorded
// (and retried after its Retry-After, or later) and logged, so renewal
// information never blocks a renewal.
func (e *Engine) fetchARI(ctx context.Context, v *store.Version, st *renewal.State, log *slog.Logger) {
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		st.RecordARIError(err, 0, e.now())
		return
	}
	ri, err := e.client.GetRenewalInfo(ctx, leaf)
	if err != nil {
		retry := renewal.ARIErrorRetry
		switch p := problemOf(err); {
		case errors.Is(err, acme.ErrNotSupported):
			retry = renewal.MaxARIRetry // the CA may add it; look once a day
		case p != nil && p.RetryAfter > 0:
			retry = p.RetryAfter
		}
		st.RecordARIError(err, retry, e.now())
		log.Debug("no renewal information", "error", err)
		return
	}
	w := renewal.Window{Start: ri.SuggestedWindow.Start, End: ri.SuggestedWindow.End}
	if err := st.RecordARI(renewal.ARIResponse{Window: w, ExplanationURL: ri.ExplanationURL, RetryAfter: ri.RetryAfter}, e.now(), nil); err != nil {
		log.Warn("unusable renewal information", "error", err)
		return
	}
	log.Debug("renewal information", "window", w.String(), "chosen", st.ARIChosen, "next_fetch", st.ARINextFetch)
}

// newOrder places the order, RFC 8555 §7.4, counting it for the reissue
// guard first (saved, so a crash still counts it). A renewal names the
// certificate it replaces (RFC 9773 §5) when the CA offers renewal
// information; if the CA refuses that (alreadyReplaced, or a request it
// cannot accept because of replaces), the order is placed once more
// without it.
func (e *Engine) newOrder(ctx context.Context, j *job, acct acme.Account, o acme.Order) (acme.Order, error) {
	cert, prev, meta, log := j.cert, j.current, j.meta, j.log
	if prev != nil {
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

// recordFailure notes a failed attempt in the lineage's renewal state:
// the backoff grows with jitter, and a Retry-After from the CA (a
// rateLimited problem) is waited for.
func (e *Engine) recordFailure(meta *Meta, err error) {
	f := renewal.Failure{Err: err.Error()}
	if p := problemOf(err); p != nil {
		f.ProblemType, f.RetryAfter = p.Type, p.RetryAfter
	}
	meta.Renewal.RecordFailure(f, e.now(), nil)
}
