package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
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
// contacting the CA: for each identifier (concurrently) it derives a
// challenge from a random token and a throwaway account key, has the
// identifier's plugin Present it (and Wait for propagation, for a plugin
// that waits), self-checks it with [self_check] (even when the
// certificate sets self_check = false) and has the plugin CleanUp. Lua
// scripts are not run. It launches the plugins it needs and stops them
// before returning. The results are in the certificate's identifier order;
// the error is for what prevents checking at all (unknown certificate).
func CheckSolve(ctx context.Context, cfg *config.Config, name string, logger *slog.Logger) ([]SolveCheck, error) {
	cert := cfg.Certificate(name)
	if cert == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCertificate, name)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating throwaway account key: %w", err)
	}
	ps := newPlugins(cfg, logger)
	defer func() {
		if err := ps.closeAll(); err != nil {
			logger.Warn("stopping plugins", "error", err)
		}
	}()
	out := make([]SolveCheck, len(cert.Identifiers))
	var wg sync.WaitGroup
	for i, id := range cert.Identifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = checkSolveOne(ctx, cfg, cert, ps, id, key, logger)
		}()
	}
	wg.Wait()
	return out, nil
}

// checkSolveOne presents, self-checks and cleans up one identifier.
func checkSolveOne(ctx context.Context, cfg *config.Config, cert *config.Certificate, ps *plugins, id acme.Identifier, key *ecdsa.PrivateKey, logger *slog.Logger) (res SolveCheck) {
	res = SolveCheck{Identifier: id.Value, Solver: cert.SolverFor(id)}
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	p, err := ps.get(ctx, res.Solver)
	if err != nil {
		res.Err = err
		return res
	}
	types := cert.ChallengeTypes(id, p.Info.ChallengeTypes)
	if len(types) == 0 {
		res.Err = fmt.Errorf("%w for %s: plugin %s solves %v", ErrNoChallenge, id.Value, res.Solver, p.Info.ChallengeTypes)
		return res
	}
	res.Challenge = types[0]
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		res.Err = fmt.Errorf("generating token: %w", err)
		return res
	}
	authz := acme.Authorization{Identifier: acme.Identifier{Type: id.Type, Value: strings.TrimPrefix(id.Value, "*.")}, Wildcard: id.Wildcard()}
	ch := acme.Challenge{Type: res.Challenge, Token: base64.RawURLEncoding.EncodeToString(tok)}
	pc, err := host.NewChallenge(authz, ch, key.Public())
	if err != nil {
		res.Err = fmt.Errorf("preparing %s challenge for %s: %w", ch.Type, id.Value, err)
		return res
	}
	log := logger.With("identifier", id.Value, "challenge", ch.Type, "solver", res.Solver)
	callTimeout := p.Config.CallTimeout.Duration
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(callTimeout, cleanupTimeout))
		defer cancel()
		if _, err := p.CleanUp(cctx, &sdk.CleanUpRequest{Challenge: pc}); err != nil {
			res.CleanUpErr = fmt.Errorf("cleaning up %s: %w", ch.Type, err)
		}
	}()
	log.Info("presenting challenge (check, no CA)")
	pctx, cancel := context.WithTimeout(ctx, callTimeout)
	_, err = p.Present(pctx, &sdk.PresentRequest{Challenge: pc})
	cancel()
	if err != nil {
		res.Err = fmt.Errorf("presenting %s: %w", ch.Type, err)
		return res
	}
	if p.Info.WaitsForPropagation {
		wctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err = p.Wait(wctx, &sdk.WaitRequest{Challenge: pc})
		cancel()
		if err != nil {
			res.Err = fmt.Errorf("waiting for %s propagation: %w", ch.Type, err)
			return res
		}
	}
	res.Err = selfCheck(ctx, cfg, res.Solver, pc, log)
	return res
}
