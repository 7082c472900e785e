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
// run: with a directory fetched afresh when the last look is
// TermsCheckInterval old, else, when the run ordered (fetched has the
// client's directory at hand), with that one; otherwise not at all, so a
// run with nothing to do makes no request. New terms are logged at WARN
// and raised as tos-changed to every script once per change; with
// ca.agree_tos_changes acmehook agrees to them. Nothing here fails the
// run: errors are logged.
func (e *Engine) checkTerms(ctx context.Context, fetched bool) {
	if ctx.Err() != nil {
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
	info := a.Info
	if info.URL == "" {
		return
	}
	now := e.now()
	fresh := now.Sub(info.TermsCheckedAt) >= TermsCheckInterval
	var dir acme.Directory
	switch {
	case fresh:
		// A client of its own: the engine's caches its directory for
		// its lifetime (the daemon's for weeks).
		c := &acme.Client{DirectoryURL: dirURL, HTTPClient: e.client.HTTPClient, UserAgent: e.client.UserAgent, RequestTimeout: e.client.RequestTimeout}
		dir, err = c.Directory(ctx)
	case fetched:
		dir, err = e.client.Directory(ctx)
	default:
		return
	}
	if err != nil {
		e.log.Warn("checking the CA's terms of service", "error", err)
		return
	}
	terms := dir.Meta.TermsOfService
	type termsState struct {
		agreed, announced string
		checked           time.Time
	}
	state := func() termsState { return termsState{info.TermsOfService, info.TermsAnnounced, info.TermsCheckedAt} }
	before := state()
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
	if fresh {
		info.TermsCheckedAt = now
	}
	if state() == before {
		return
	}
	if err := e.store.SaveAccountInfo(context.WithoutCancel(ctx), dirURL, info); err != nil {
		e.log.Warn("checking the CA's terms of service: saving account", "error", err)
	}
}

// termsChanged handles the CA's new terms for the account in info: it
// agrees to them when the configuration says so, logs, and raises
// tos-changed to every script.
func (e *Engine) termsChanged(ctx context.Context, info *store.AccountInfo, terms string) {
	previous, agreed := info.TermsOfService, false
	if e.cfg.CA.AgreeTOSChanges {
		acct, err := e.Account(ctx)
		if err == nil {
			_, err = e.client.AgreeToTerms(ctx, acct)
		}
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
