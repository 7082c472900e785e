package engine

import (
	"context"
	"errors"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/store"
)

// TermsCheckInterval is how long the engine goes at most without fetching
// the CA's directory afresh to compare its terms of service with those the
// account agreed to (checkTerms).
const TermsCheckInterval = 24 * time.Hour

// checkTerms compares the terms of service the CA's directory names with
// those the stored account agreed to (RFC 8555 §7.3.3), at the end of a
// run, with the directory fetched afresh (the engine's client's copy
// refreshed): when the last look is TermsCheckInterval old, or when the
// run ordered (fetched: the client has the directory at hand) and that
// copy names terms other than those agreed to and those announced. A copy
// is only a hint, never decided on: a long-lived client's (the daemon's)
// may be weeks old. Otherwise nothing is asked, so a run with nothing to
// do makes no request. New terms are logged at WARN and raised as
// tos-changed to every script once per change; with ca.agree_tos_changes
// acmehook agrees to them. In a fleet one node looks at a time, under the
// account's lock, and decides on the account info read under it
// (lockAccount): the fleet raises tos-changed once per change and writes
// the account info once per look. Nothing here fails the run: errors are
// logged.
func (e *Engine) checkTerms(ctx context.Context, fetched bool) {
	if ctx.Err() != nil {
		return
	}
	// The account info last seen is as old as the stored one or older
	// (the look time only moves on), so when it says no look is due, the
	// stored one does too: nothing is read. Otherwise the stored one
	// decides.
	if e.termsSeen != nil && e.termsSeen.URL != "" && !e.termsLookDue(ctx, *e.termsSeen, fetched) {
		return
	}
	dirURL := e.cfg.CA.Directory
	a, err := e.store.LoadAccount(ctx, dirURL)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		e.log.Warn("checking the CA's terms of service: loading account", "error", err)
		return
	}
	e.termsSeen = &a.Info
	if !e.termsLookDue(ctx, a.Info, fetched) {
		return
	}
	st, unlock, err := e.lockAccount(ctx)
	if errors.Is(err, store.ErrLocked) {
		e.log.Debug("another node is looking at the CA's terms of service", "error", err)
		return
	}
	if err != nil {
		e.log.Warn("checking the CA's terms of service: taking the account's lock", "error", err)
		return
	}
	defer unlock()
	// Read again under the lock: another node may have just looked.
	if a, err = st.LoadAccount(ctx, dirURL); err != nil {
		e.log.Warn("checking the CA's terms of service: loading account", "error", err)
		return
	}
	info := a.Info
	e.termsSeen = &a.Info
	if !e.termsLookDue(ctx, info, fetched) {
		return
	}
	dir, err := e.client.RefreshDirectory(ctx)
	if err != nil {
		e.log.Warn("checking the CA's terms of service", "error", err)
		return
	}
	terms := dir.Meta.TermsOfService
	switch {
	case info.TermsOfService == "" && info.TermsCheckedAt.IsZero():
		// Stored before the terms were recorded: take the current ones
		// as those agreed to.
		info.TermsOfService = terms
	case terms == info.TermsOfService:
		info.TermsAnnounced = ""
	case terms != info.TermsAnnounced || e.cfg.CA.AgreeTOSChanges:
		// Announced once per change; agreeing is tried at each look
		// until it succeeds.
		e.termsChanged(ctx, &info, terms)
	}
	info.TermsCheckedAt = e.now()
	if err := st.SaveAccountInfo(context.WithoutCancel(ctx), dirURL, info); err != nil {
		e.log.Warn("checking the CA's terms of service: saving account", "error", err)
		return
	}
	e.termsSeen = &info
}

// termsLookDue reports whether checkTerms should fetch the directory for
// the account info: its last look is TermsCheckInterval old, or the run
// ordered and the client's copy of the directory names terms that are
// neither those agreed to nor (unless ca.agree_tos_changes, whose
// agreement is tried again until it succeeds) those announced.
func (e *Engine) termsLookDue(ctx context.Context, info store.AccountInfo, fetched bool) bool {
	if info.URL == "" {
		return false
	}
	if e.now().Sub(info.TermsCheckedAt) >= TermsCheckInterval {
		return true
	}
	if !fetched {
		return false
	}
	dir, err := e.client.Directory(ctx)
	if err != nil {
		return false
	}
	t := dir.Meta.TermsOfService
	return t != info.TermsOfService && (t != info.TermsAnnounced || e.cfg.CA.AgreeTOSChanges)
}

// termsChanged handles the CA's new terms for the account in info: it
// agrees to them when the configuration says so, logs, and raises
// tos-changed to every script.
func (e *Engine) termsChanged(ctx context.Context, info *store.AccountInfo, terms string) {
	previous, agreed := info.TermsOfService, false
	if e.cfg.CA.AgreeTOSChanges {
		_, err := e.withAccount(ctx, func(acct acme.Account) error {
			_, err := e.client.AgreeToTerms(ctx, acct)
			return err
		})
		if err != nil {
			e.log.Error("the CA's terms of service changed; agreeing to them (ca.agree_tos_changes) failed", "terms", terms, "agreed", previous, "error", err)
		} else {
			agreed = true
			info.TermsOfService, info.TermsOfServiceAgreed = terms, true
			e.log.Warn("the CA's terms of service changed; agreed to them (ca.agree_tos_changes)", "terms", terms, "previous", previous)
		}
	}
	if !agreed {
		e.log.Warn("the CA's terms of service changed; acmehook has not agreed to them: read them and agree (ca.agree_tos_changes), or the CA may refuse orders", "terms", terms, "agreed", previous)
	}
	info.TermsAnnounced = terms
	ev := event.NewTOSChanged(e.cfg.CA.Directory, info.URL, terms, previous, agreed)
	for i := range e.scripts {
		rs := &e.scripts[i]
		if err := rs.hook.Handle(ctx, ev); err != nil {
			e.log.Error("tos-changed script failed", "script", rs.script, "error", err)
		}
	}
}

// ordersPlaced reports whether a job of the run was due for an order, so
// that the client has fetched the directory.
func ordersPlaced(jobs []*job) bool {
	for _, j := range jobs {
		if j.status.Err == nil && j.status.Due() {
			return true
		}
	}
	return false
}
