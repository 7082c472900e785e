package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/luahost"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Backoff between self-check attempts: it starts at selfCheckFirstBackoff
// and doubles up to selfCheckMaxBackoff, within [self_check] timeout.
const (
	selfCheckFirstBackoff = 100 * time.Millisecond
	selfCheckMaxBackoff   = time.Second
)

// SelfCheckError is the error of a challenge whose self-check failed: the
// challenge was not answered and no CA validation was spent. Err is
// usually an *acme.VerifyError, so errors.Is(err, acme.VerifyWrongBody)
// tells the reason.
type SelfCheckError struct {
	// Challenge is the challenge type, Identifier the identifier as the
	// certificate lists it ("*.example.org" for a wildcard), Solver the
	// plugin that presented it.
	Challenge, Identifier, Solver string
	Err                           error
}

// Error reads "self-check of http-01 for www.example.com (solver webroot)
// failed: wrong body: got "..." (at http://...)".
func (e *SelfCheckError) Error() string {
	reason := e.Err.Error()
	var ve *acme.VerifyError
	if errors.As(e.Err, &ve) {
		reason = string(ve.Reason)
		if ve.Detail != "" {
			reason += ": " + ve.Detail
		}
		if ve.Err != nil {
			reason += ": " + ve.Err.Error()
		}
		if ve.Target != "" {
			reason += " (at " + ve.Target + ")"
		}
	}
	return fmt.Sprintf("self-check of %s for %s (solver %s) failed: %s", e.Challenge, e.Identifier, e.Solver, reason)
}

// Unwrap returns the verification error.
func (e *SelfCheckError) Unwrap() error { return e.Err }

// verifier returns the acme.Verifier configured by [self_check].
func verifier(cfg *config.Config) *acme.Verifier {
	sc := cfg.SelfCheck
	return &acme.Verifier{
		Resolvers: sc.Resolvers,
		HTTPPort:  sc.HTTPPort,
		TLSPort:   sc.TLSPort,
		Timeout:   sc.Timeout.Duration,
	}
}

// selfCheck checks the presented challenge ch from the outside, as the
// CA's validation authority would (acme.Verifier), retrying with a short
// backoff until it passes or [self_check] timeout has passed. It returns a
// *SelfCheckError with the last failure. A challenge type it cannot check
// passes, with a warning.
func selfCheck(ctx context.Context, cfg *config.Config, solver string, ch sdk.Challenge, log *slog.Logger) error {
	v := verifier(cfg)
	ctx, cancel := context.WithTimeout(ctx, cfg.SelfCheck.Timeout.Duration)
	defer cancel()
	id := acme.Identifier{Type: ch.Identifier.Type, Value: ch.Identifier.Value}
	shown := id.Value
	if ch.Identifier.Wildcard {
		shown = "*." + shown
	}
	var check func() error
	switch ch.Type {
	case acme.ChallengeHTTP01:
		check = func() error { return v.HTTP01(ctx, id, ch.Token, ch.KeyAuthorization) }
	case acme.ChallengeDNS01:
		check = func() error { return v.DNS01(ctx, id.Value, ch.KeyAuthorization) }
	case acme.ChallengeTLSALPN01:
		check = func() error { return v.TLSALPN01(ctx, id, ch.KeyAuthorization) }
	default:
		log.Warn("no self-check for this challenge type; answering it unchecked")
		return nil
	}
	fail := func(err error) error {
		return &SelfCheckError{Challenge: ch.Type, Identifier: shown, Solver: solver, Err: err}
	}
	var prev error // the last failure before the deadline cut an attempt short
	backoff := selfCheckFirstBackoff
	for attempt := 1; ; attempt++ {
		err := check()
		if err == nil {
			log.Debug("self-check passed", "attempts", attempt)
			return nil
		}
		var ve *acme.VerifyError
		if !errors.As(err, &ve) {
			return fail(err) // not a check that failed: a bad identifier, a cancelled run
		}
		if ctx.Err() != nil {
			if prev != nil && ve.Reason == acme.VerifyTimeout {
				err = prev
			}
			return fail(err)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < backoff {
			return fail(err)
		}
		log.Debug("self-check failed, retrying", "attempt", attempt, "reason", ve.Reason)
		prev = err
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(err)
		case <-t.C:
		}
		backoff = min(2*backoff, selfCheckMaxBackoff)
	}
}

// SolveCheck is what CheckSolve did for one identifier.
type SolveCheck struct {
	// Identifier as the certificate lists it, Solver the plugin that
	// solves it, Challenge the type used ("" if none could be chosen).
	Identifier, Solver, Challenge string
	// Err is why Present, the propagation wait or the self-check failed;
	// nil if all passed.
	Err error
	// CleanUpErr is the error of the plugin's CleanUp, which runs after
	// every Present.
	CleanUpErr error
	// Duration is how long Present, the wait and the self-check took.
	Duration time.Duration
}

// OK reports whether the identifier was presented, self-checked and
// cleaned up without error.
func (s SolveCheck) OK() bool { return s.Err == nil && s.CleanUpErr == nil }

// CheckSolve tests the solver setup of the certificate called name without
// contacting the CA, with the solver a run uses (certSolver): for each
// identifier (concurrently) it makes a synthetic challenge of the first
// type the certificate would use (host.SyntheticTask: a random token, a
// throwaway account key), presents it (the plugin's Present and Wait, the
// challenge-provision scripts with ev.test set, the self-check with
// [self_check], even when the certificate sets self_check = false) and
// cleans it up (the plugin's CleanUp, challenge-cleanup). It launches the
// plugins the certificate needs, and only those, and stops them before
// returning. With relay set (a fleet), each http-01 and tls-alpn-01
// challenge is published to the other nodes before the scripts and the
// self-check, as a run does, so a self-check through the load balancer
// tests every node. The results are in the certificate's identifier
// order; the error is for what prevents checking at all (unknown
// certificate).
func CheckSolve(ctx context.Context, cfg *config.Config, name string, logger *slog.Logger, relay Relay) ([]SolveCheck, error) {
	cert := cfg.Certificate(name)
	if cert == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCertificate, name)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ps := newPlugins(cfg, logger)
	defer func() {
		if err := ps.closeAll(); err != nil {
			logger.Warn("stopping plugins", "error", err)
		}
	}()
	hooks, _, lua := luaHooks(cfg, luahost.Options{Logger: logger, LibDir: cfg.Lua.LibDir, Vars: cfg.Lua.RevealedVars()})
	defer lua.Close()
	s := &certSolver{
		cert: cert, cfg: cfg, plugins: ps, hook: hooks[cert.Name], relay: relay, log: logger.With("cert", cert.Name),
		selfCheck: true, test: true, progress: defaultProgressInterval,
	}
	out := make([]SolveCheck, len(cert.Identifiers))
	var wg sync.WaitGroup
	for i, id := range cert.Identifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.check(ctx, id)
		}()
	}
	wg.Wait()
	return out, nil
}

// check presents, checks and cleans up a synthetic challenge for id.
func (s *certSolver) check(ctx context.Context, id acme.Identifier) (res SolveCheck) {
	res = SolveCheck{Identifier: id.Value, Solver: s.cert.SolverFor(id)}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	types, err := s.ChallengeTypes(ctx, id)
	if err != nil {
		res.Err = err
		return res
	}
	if len(types) == 0 {
		res.Err = fmt.Errorf("%w for %s: plugin %s solves none the certificate allows", ErrNoChallenge, id.Value, res.Solver)
		return res
	}
	res.Challenge = types[0]
	t, err := host.SyntheticTask(id, res.Challenge)
	if err != nil {
		res.Err = err
		return res
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acme.CleanUpTimeout)
		defer cancel()
		if err := s.CleanUp(cctx, t); err != nil {
			res.CleanUpErr = fmt.Errorf("cleaning up %s: %w", res.Challenge, err)
		}
	}()
	res.Err = s.Present(ctx, t) // its errors name the plugin or the check
	return res
}
