package host

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Hook is a step the caller adds to a Solver's Present or CleanUp: a
// provision script, a self-check, a cleanup script. c is the challenge the
// plugin was handed.
type Hook func(ctx context.Context, c sdk.Challenge) error

// Solver is an acme.Solver backed by a launched plugin (see
// acme.Client.SolveAuthorizations). Present derives the plugin's
// sdk.Challenge from the task, has the plugin Present it, Wait for it when
// the plugin waits for propagation, then runs Checks in order; CleanUp has
// the plugin CleanUp, then runs CleanUps. A Solver is safe for concurrent
// use as its Plugin is; the plugin's max_calls bounds the calls in flight.
type Solver struct {
	// Plugin answers the challenges; Info is what it said about itself.
	Plugin *Plugin
	Info   *InfoResponse
	// Choose, when set, picks the challenge types to use for id, most
	// preferred first, from those the plugin solves for it (the caller's
	// configured challenge); nil keeps the plugin's order.
	Choose func(id acme.Identifier, solves []string) []string
	// Checks run after the plugin's Present (and Wait); the first error
	// ends Present with it, and CleanUp still follows.
	Checks []Hook
	// CleanUps run after the plugin's CleanUp, each whatever the others
	// returned; their errors are joined.
	CleanUps []Hook
	// Observe, when set, is told of every call to the plugin ("present",
	// "wait", "cleanup") with its error and duration (metrics).
	Observe func(method string, err error, d time.Duration)
}

// observe reports a call to the plugin that started at start.
func (s *Solver) observe(method string, err error, start time.Time) {
	if s.Observe != nil {
		s.Observe(method, err, time.Since(start))
	}
}

var _ acme.Solver = (*Solver)(nil)

// ChallengeTypes returns the challenge types the plugin solves for id: none
// for an identifier type it does not list, only dns-01 for a wildcard,
// then as Choose picks.
func (s *Solver) ChallengeTypes(_ context.Context, id acme.Identifier) ([]string, error) {
	if !slices.Contains(s.Info.IdentifierTypes, id.Type) {
		return nil, nil
	}
	types := slices.Clone(s.Info.ChallengeTypes)
	if id.Wildcard() {
		types = slices.DeleteFunc(types, func(t string) bool { return t != acme.ChallengeDNS01 })
	}
	if s.Choose != nil {
		types = s.Choose(id, types)
	}
	return types, nil
}

// Present makes the task's challenge answerable through the plugin, then
// runs Checks.
func (s *Solver) Present(ctx context.Context, t acme.Task) error {
	c, err := taskChallenge(t)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = s.Plugin.Present(ctx, &sdk.PresentRequest{Challenge: c})
	s.observe("present", err, start)
	if err != nil {
		return err
	}
	if s.Info.WaitsForPropagation {
		start := time.Now()
		_, err := s.Plugin.Wait(ctx, &sdk.WaitRequest{Challenge: c})
		s.observe("wait", err, start)
		if err != nil {
			return err
		}
	}
	for _, check := range s.Checks {
		if err := check(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// CleanUp has the plugin undo Present, then runs CleanUps.
func (s *Solver) CleanUp(ctx context.Context, t acme.Task) error {
	c, err := taskChallenge(t)
	if err != nil {
		return err
	}
	var errs []error
	start := time.Now()
	_, err = s.Plugin.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c})
	s.observe("cleanup", err, start)
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range s.CleanUps {
		if err := h(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SyntheticTask returns a task for id and challengeType that no CA has
// issued: a random token and a key authorization for a throwaway account
// key (made once per process). A Solver's Present and CleanUp of it test a
// plugin and its checks without any CA (`acmehook check --solve`,
// sdktest.Check). A wildcard id ("*.example.com") is presented for its base
// name, as a CA's authorization would be.
func SyntheticTask(id acme.Identifier, challengeType string) (acme.Task, error) {
	key, err := throwawayKey()
	if err != nil {
		return acme.Task{}, err
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return acme.Task{}, fmt.Errorf("making a token: %w", err)
	}
	ch := acme.Challenge{Type: challengeType, Token: base64.RawURLEncoding.EncodeToString(tok)}
	keyAuth, err := acme.KeyAuthorization(ch.Token, key.Public())
	if err != nil {
		return acme.Task{}, err
	}
	authz := acme.Authorization{
		Identifier: acme.Identifier{Type: id.Type, Value: strings.TrimPrefix(id.Value, "*.")},
		Wildcard:   id.Wildcard(),
		Challenges: []acme.Challenge{ch},
	}
	return acme.Task{Authorization: authz, Challenge: ch, KeyAuthorization: keyAuth}, nil
}

var throwawayKey = sync.OnceValues(func() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making a throwaway account key: %w", err)
	}
	return key, nil
})
