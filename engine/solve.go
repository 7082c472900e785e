package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// cleanupTimeout bounds the cleanup of one challenge when the run's own
// context is already done.
const cleanupTimeout = time.Minute

// authorize solves every authorization of order concurrently (RFC 8555
// §7.5) and returns every failure joined.
func (e *Engine) authorize(ctx context.Context, cert *config.Certificate, acct acme.Account, order acme.Order, log *slog.Logger) error {
	errs := make([]error, len(order.Authorizations))
	var wg sync.WaitGroup
	for i, u := range order.Authorizations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.solve(ctx, cert, acct, u, log)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// solve answers one authorization: it picks the challenge type the
// identifier's solver supports (the certificate's challenge, else the
// solver's preference) among those the CA offers, derives the challenge
// values, raises challenge-provision to the plugin (Present, then Wait for
// a plugin that waits for propagation) and to the scripts (a failing script
// vetoes), self-checks the challenge (unless the certificate sets
// self_check = false; a failure is a *SelfCheckError and the challenge is
// not answered), runs the BeforeAccept hook, answers the challenge (§7.5.1) and
// polls the authorization. challenge-cleanup (plugin CleanUp, then the
// scripts) always follows Present, whatever happened.
func (e *Engine) solve(ctx context.Context, cert *config.Certificate, acct acme.Account, url string, log *slog.Logger) (err error) {
	authz, err := e.client.GetAuthorization(ctx, acct, url)
	if err != nil {
		return fmt.Errorf("fetching authorization %s: %w", url, err)
	}
	id := authz.Identifier
	if authz.Wildcard {
		id.Value = "*." + id.Value
	}
	switch authz.Status {
	case acme.StatusValid:
		log.Debug("authorization already valid", "identifier", id.Value)
		return nil
	case acme.StatusPending:
	default:
		return fmt.Errorf("authorization for %s is %s", id.Value, authz.Status)
	}
	solver := cert.SolverFor(id)
	p, err := e.plugins.get(ctx, solver)
	if err != nil {
		return err
	}
	var ch acme.Challenge
	var found bool
	for _, t := range cert.ChallengeTypes(id, p.Info.ChallengeTypes) {
		if ch, found = authz.Challenge(t); found {
			break
		}
	}
	if !found {
		offered := make([]string, len(authz.Challenges))
		for i, c := range authz.Challenges {
			offered[i] = c.Type
		}
		return fmt.Errorf("%w for %s: the CA offers %v, plugin %s solves %v", ErrNoChallenge, id.Value, offered, solver, p.Info.ChallengeTypes)
	}
	pc, err := host.NewChallenge(authz, ch, acct.Key.Public())
	if err != nil {
		return fmt.Errorf("preparing %s challenge for %s: %w", ch.Type, id.Value, err)
	}
	log = log.With("identifier", id.Value, "challenge", ch.Type, "solver", solver)
	callTimeout := p.Config.CallTimeout.Duration

	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(callTimeout, cleanupTimeout))
		defer cancel()
		if _, cerr := p.CleanUp(cctx, &sdk.CleanUpRequest{Challenge: pc}); cerr != nil {
			log.Warn("challenge cleanup failed", "error", cerr)
		}
		if serr := e.raise(cctx, cert, challengeEvent(event.ChallengeCleanup, cert, pc)); serr != nil {
			log.Warn("challenge-cleanup script failed", "error", serr)
		}
	}()

	log.Info("presenting challenge")
	pctx, cancel := context.WithTimeout(ctx, callTimeout)
	_, err = p.Present(pctx, &sdk.PresentRequest{Challenge: pc})
	cancel()
	if err != nil {
		return fmt.Errorf("presenting %s: %w", ch.Type, err)
	}
	if p.Info.WaitsForPropagation {
		wctx, cancel := context.WithTimeout(ctx, callTimeout)
		stop := e.progressLog(log, "waiting for propagation")
		_, err = p.Wait(wctx, &sdk.WaitRequest{Challenge: pc})
		stop()
		cancel()
		if err != nil {
			return fmt.Errorf("waiting for %s propagation: %w", ch.Type, err)
		}
	}
	if err := e.raise(ctx, cert, challengeEvent(event.ChallengeProvision, cert, pc)); err != nil {
		return fmt.Errorf("%w: %s for %s: %w", ErrVetoed, ch.Type, id.Value, err)
	}
	if cert.SelfCheckEnabled() {
		if err := selfCheck(ctx, e.cfg, solver, pc, log); err != nil {
			return err
		}
	}
	if e.hook != nil {
		if err := e.hook(ctx, cert, p, pc); err != nil {
			return fmt.Errorf("checking %s for %s before answering: %w", ch.Type, id.Value, err)
		}
	}
	if _, err := e.client.AcceptChallenge(ctx, acct, ch); err != nil {
		return fmt.Errorf("answering %s challenge for %s: %w", ch.Type, id.Value, err)
	}
	stop := e.progressLog(log, "waiting for validation")
	_, err = e.client.WaitAuthorization(ctx, acct, url)
	stop()
	if err != nil {
		return fmt.Errorf("validating %s for %s: %w", ch.Type, id.Value, err)
	}
	log.Info("identifier validated")
	return nil
}

// progressLog logs msg at once at Debug and then at Info every
// ProgressInterval until stop is called, so a long wait is visible. No
// line is logged once stop has returned.
func (e *Engine) progressLog(log *slog.Logger, msg string) (stop func()) {
	log.Debug(msg)
	done, exited := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(exited)
		t := time.NewTicker(e.progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				log.Info(msg, "elapsed", time.Since(start).Round(time.Second))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-exited
	}
}

// sameNames reports whether a and b hold the same names in any order.
func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
