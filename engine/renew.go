package engine

import (
	"context"
	"errors"
	"log/slog"

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
