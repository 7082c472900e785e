package engine

import (
	"context"
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

// certSolver is the acme.Solver of one certificate, composed per
// identifier: the plugin the certificate names for it (a plugin/host
// Solver: Present, then Wait for a plugin that waits for propagation),
// then the challenge-provision hooks (an error vetoes the challenge), then
// the self-check (unless the certificate turns it off). Its CleanUp, which
// follows every Present, has the plugin clean up and then raises
// challenge-cleanup. The run answers challenges through it
// (acme.Client.SolveAuthorizations) and `check --solve` presents and
// cleans up synthetic ones (CheckSolve): the chain exists once.
type certSolver struct {
	cert    *config.Certificate
	cfg     *config.Config
	plugins *plugins
	hook    event.Hook // the certificate's hooks; nil raises nothing
	relay   Relay      // the fleet's other nodes; nil: this node answers alone
	log     *slog.Logger
	// selfCheck forces the self-check on (check --solve) whatever the
	// certificate says; test marks the challenge events as synthetic.
	selfCheck, test bool
	progress        time.Duration
	// beforeAccept is a test seam run after every other check.
	beforeAccept challengeHook

	mu      sync.Mutex
	solvers map[string]*host.Solver // by plugin name
}

// challengeHook is a test seam: it runs for each challenge after the
// solver, the provision hooks and the self-check, just before the CA is
// told to validate it; an error stops the certificate without spending a
// validation.
type challengeHook func(ctx context.Context, cert *config.Certificate, solver *Plugin, ch sdk.Challenge) error

// solver returns the certSolver of cert for a run.
func (e *Engine) solver(cert *config.Certificate, log *slog.Logger) *certSolver {
	return &certSolver{
		cert: cert, cfg: e.cfg, plugins: e.plugins, hook: e.hooks[cert.Name], relay: e.relay, log: log,
		progress: e.progress, beforeAccept: e.beforeAccept,
	}
}

var (
	_ acme.Solver       = (*certSolver)(nil)
	_ acme.WaitObserver = (*certSolver)(nil)
)

// pluginSolver returns the plugin/host Solver for id, launching its plugin
// on first use.
func (s *certSolver) pluginSolver(ctx context.Context, id acme.Identifier) (*host.Solver, error) {
	name := s.cert.SolverFor(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if hs, ok := s.solvers[name]; ok {
		return hs, nil
	}
	p, err := s.plugins.get(ctx, name)
	if err != nil {
		return nil, err
	}
	hs := &host.Solver{
		Plugin: p.Plugin,
		Info:   p.Info,
		Choose: func(id acme.Identifier, solves []string) []string {
			return s.cert.ChallengeTypes(id, solves)
		},
		Checks:   []host.Hook{s.publish, s.provision},
		CleanUps: []host.Hook{s.withdraw, s.cleanup},
		Observe: func(method string, err error, d time.Duration) {
			s.plugins.metrics.PluginCall(name, method, err, d)
		},
	}
	if s.selfCheck || s.cert.SelfCheckEnabled() {
		hs.Checks = append(hs.Checks, func(ctx context.Context, c sdk.Challenge) error {
			return selfCheck(ctx, s.cfg, name, c, s.challengeLog(c, name))
		})
	}
	if s.beforeAccept != nil {
		hs.Checks = append(hs.Checks, func(ctx context.Context, c sdk.Challenge) error {
			return s.beforeAccept(ctx, s.cert, p, c)
		})
	}
	if s.solvers == nil {
		s.solvers = map[string]*host.Solver{}
	}
	s.solvers[name] = hs
	return hs, nil
}

// ChallengeTypes returns the challenge types id's plugin solves for it
// that the certificate allows, preferred first.
func (s *certSolver) ChallengeTypes(ctx context.Context, id acme.Identifier) ([]string, error) {
	hs, err := s.pluginSolver(ctx, id)
	if err != nil {
		return nil, err
	}
	return hs.ChallengeTypes(ctx, id)
}

// Present has id's plugin present the challenge, then runs the checks.
func (s *certSolver) Present(ctx context.Context, t acme.Task) error {
	hs, err := s.pluginSolver(ctx, t.Identifier())
	if err != nil {
		return err
	}
	log := s.log.With("identifier", t.Identifier().Value, "challenge", t.Challenge.Type, "solver", hs.Plugin.Name())
	log.Info("presenting challenge")
	if hs.Info.WaitsForPropagation {
		defer progressLog(log, s.progress, "waiting for propagation")()
	}
	return hs.Present(ctx, t)
}

// CleanUp has id's plugin clean up, then raises challenge-cleanup.
func (s *certSolver) CleanUp(ctx context.Context, t acme.Task) error {
	hs, err := s.pluginSolver(ctx, t.Identifier())
	if err != nil {
		return err
	}
	return hs.CleanUp(ctx, t)
}

// Waiting logs progress while the CA validates t.
func (s *certSolver) Waiting(t acme.Task) (done func()) {
	log := s.log.With("identifier", t.Identifier().Value, "challenge", t.Challenge.Type)
	stop := progressLog(log, s.progress, "waiting for validation")
	return func() {
		stop()
		log.Debug("validation wait ended")
	}
}

// publish has the fleet's other nodes present c too (Relay.Publish), for
// a challenge the CA validates by connecting to the identifier's address:
// its request may land on any node.
func (s *certSolver) publish(ctx context.Context, c sdk.Challenge) error {
	if s.relay == nil || !relayed(c.Type) {
		return nil
	}
	defer progressLog(s.challengeLog(c, s.cert.SolverFor(acme.Identifier{Type: c.Identifier.Type, Value: c.Identifier.Value})), s.progress, "waiting for the fleet's nodes to present the challenge")()
	return s.relay.Publish(ctx, relayChallenge(s.cert.Name, c))
}

// withdraw has the fleet's other nodes clean c up (Relay.Withdraw).
func (s *certSolver) withdraw(ctx context.Context, c sdk.Challenge) error {
	if s.relay == nil || !relayed(c.Type) {
		return nil
	}
	return s.relay.Withdraw(ctx, relayChallenge(s.cert.Name, c))
}

// provision raises challenge-provision; an error is the hooks' veto.
func (s *certSolver) provision(ctx context.Context, c sdk.Challenge) error {
	if s.hook == nil {
		return nil
	}
	if err := s.hook.Handle(ctx, s.challengeEvent(event.ChallengeProvision, c)); err != nil {
		return fmt.Errorf("%w: %w", ErrVetoed, err)
	}
	return nil
}

// cleanup raises challenge-cleanup.
func (s *certSolver) cleanup(ctx context.Context, c sdk.Challenge) error {
	if s.hook == nil {
		return nil
	}
	return s.hook.Handle(ctx, s.challengeEvent(event.ChallengeCleanup, c))
}

func (s *certSolver) challengeEvent(t event.Type, c sdk.Challenge) event.Event {
	ev := challengeEvent(t, s.cert, c)
	ev.Test = s.test
	return ev
}

// challengeEvent builds challenge-provision or challenge-cleanup data.
func challengeEvent(t event.Type, cert *config.Certificate, ch sdk.Challenge) event.Event {
	id := ch.Identifier.Value
	if ch.Identifier.Wildcard {
		id = "*." + id
	}
	return event.NewChallenge(t, cert.Name, domains(cert), event.Challenge{
		Type:             ch.Type,
		Identifier:       id,
		Token:            ch.Token,
		KeyAuthorization: ch.KeyAuthorization,
		DNSName:          ch.DNS01RecordName,
		DNSValue:         ch.DNS01RecordValue,
	})
}

// challengeLog is the log of challenge c solved by plugin name.
func (s *certSolver) challengeLog(c sdk.Challenge, name string) *slog.Logger {
	id := c.Identifier.Value
	if c.Identifier.Wildcard {
		id = "*." + id
	}
	return s.log.With("identifier", id, "challenge", c.Type, "solver", name)
}

// progressLog logs msg at once at Debug and then at Info every interval
// until stop is called, so a long wait is visible. No line is logged once
// stop has returned.
func progressLog(log *slog.Logger, every time.Duration, msg string) (stop func()) {
	log.Debug(msg)
	done, exited := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
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
