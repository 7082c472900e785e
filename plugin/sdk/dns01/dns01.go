// Package dns01 helps write dns-01 solver plugins (RFC 8555 §8.4): it waits
// until a challenge's TXT record is visible where the CA will look, and it
// turns a DNS provider's record change into a whole sdk.Solver.
//
// Waiting follows CNAMEs from _acme-challenge.<domain> (delegation to
// another zone), finds the authoritative nameservers of the zone that holds
// the record, and asks each of them, without recursion, until every one
// answers the value. Every question goes to the configured resolvers (or
// the nameservers they name); only when none are configured are those of
// /etc/resolv.conf used.
//
// A plugin for a DNS provider embeds Config in its configuration struct,
// implements Provider, and names New[T] as its constructor:
//
//	type provider struct {
//		Token string `json:"token"`
//		dns01.Config // resolvers, propagation_timeout, ...
//	}
//
//	func (p *provider) SetTXT(ctx context.Context, name, value string, set bool) error { ... }
//
//	sdk.Serve(sdk.Plugin{Name: "mydns", ChallengeTypes: []string{"dns-01"},
//		WaitsForPropagation: true, New: dns01.New[provider]})
//
// A plugin with a Solver of its own waits in one line from its Wait:
//
//	return &sdk.WaitResponse{}, s.cfg.Wait(ctx, req.Challenge, s.log)
package dns01

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Provider changes TXT records at a DNS provider.
type Provider interface {
	// SetTXT adds (set is true) or removes (set is false) the TXT record
	// called name with value. name is fully qualified, with its final dot,
	// and already follows a CNAME on _acme-challenge; name and value are
	// checked plain DNS name and base64url. Removing a record that is not
	// there SHOULD succeed.
	SetTXT(ctx context.Context, name, value string, set bool) error
}

// configured is implemented by every type that embeds Config.
type configured interface{ dns01Config() Config }

func (c Config) dns01Config() Config { return c }

// New is an sdk.Plugin's New for a provider type T whose fields are the
// plugin's configuration keys (decoded strictly) and which embeds Config:
// the solver it returns checks each challenge, follows a CNAME on the
// record name, calls SetTXT in Present and CleanUp, and waits for
// propagation in Wait (so the Plugin sets WaitsForPropagation). If *T has a
// method Init(ctx, sdk.Config) error, it is called after decoding, to check
// values or set up a client.
func New[T any, P interface {
	*T
	Provider
	configured
}](ctx context.Context, cfg sdk.Config) (sdk.Solver, error) {
	p := P(new(T))
	if err := cfg.Decode(p); err != nil {
		return nil, err
	}
	if i, ok := any(p).(interface {
		Init(context.Context, sdk.Config) error
	}); ok {
		if err := i.Init(ctx, cfg); err != nil {
			return nil, err
		}
	}
	return &solver{p: p, cfg: p.dns01Config(), log: cfg.Log()}, nil
}

// solver is the sdk.Solver New returns.
type solver struct {
	p   Provider
	cfg Config
	log *slog.Logger
}

// Present sets the record.
func (s *solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	return &sdk.PresentResponse{}, s.change(ctx, req.Challenge, true)
}

// CleanUp removes the record.
func (s *solver) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	return &sdk.CleanUpResponse{}, s.change(ctx, req.Challenge, false)
}

// Wait waits until the record is visible.
func (s *solver) Wait(ctx context.Context, req *sdk.WaitRequest) (*sdk.WaitResponse, error) {
	if err := CheckChallenge(req.Challenge); err != nil {
		return nil, err
	}
	return &sdk.WaitResponse{}, s.cfg.Wait(ctx, req.Challenge, s.log)
}

func (s *solver) change(ctx context.Context, c sdk.Challenge, set bool) error {
	if err := CheckChallenge(c); err != nil {
		return err
	}
	name, err := s.cfg.RecordName(ctx, c, s.log)
	if err != nil {
		return err
	}
	verb := "removing"
	if set {
		verb = "setting"
	}
	s.log.Info(verb+" TXT record", "name", name)
	if err := s.p.SetTXT(ctx, name, c.DNS01RecordValue, set); err != nil {
		return fmt.Errorf("%s TXT record %s: %w", verb, name, err)
	}
	return nil
}

// RecordName returns where the challenge's TXT record must be set: its
// DNS01RecordName after CNAMEs. A CNAME to a name that is not a plain DNS
// name is an error wrapping ErrInvalidName; a lookup that fails is logged
// and the record name itself returned.
func (c Config) RecordName(ctx context.Context, ch sdk.Challenge, log *slog.Logger) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name, err := c.FollowCNAME(ctx, ch.DNS01RecordName, log)
	switch {
	case err == nil:
		return name, nil
	case errors.Is(err, ErrInvalidName):
		// Refused, not worked around by setting the record at the
		// original name.
		return "", err
	default:
		log.Warn("not following CNAME", "name", ch.DNS01RecordName, "error", err)
		return ch.DNS01RecordName, nil
	}
}

// CheckChallenge refuses a challenge whose values are not what a dns-01
// challenge derives (RFC 8555 §8.4), so that none of them reach a provider
// or a program: the type, a plain DNS name, the record name
// "_acme-challenge.<name>.", a base64url token, a key authorization
// token.thumbprint and a base64url record value.
func CheckChallenge(c sdk.Challenge) error {
	if c.Type != acme.ChallengeDNS01 {
		return fmt.Errorf("challenge type %q not supported: only dns-01", c.Type)
	}
	if err := CheckName(c.Identifier.Value); err != nil {
		return fmt.Errorf("domain: %w", err)
	}
	if want := "_acme-challenge." + strings.ToLower(c.Identifier.Value) + "."; strings.ToLower(c.DNS01RecordName) != want {
		return fmt.Errorf("%w: record name %q is not %q", ErrInvalidName, c.DNS01RecordName, want)
	}
	if err := acme.ValidateToken(c.Token); err != nil {
		return err
	}
	if thumb, ok := strings.CutPrefix(c.KeyAuthorization, c.Token+"."); !ok || acme.ValidateToken(thumb) != nil {
		return errors.New("key authorization is not token.thumbprint")
	}
	if acme.ValidateToken(c.DNS01RecordValue) != nil {
		return errors.New("record value is not base64url")
	}
	return nil
}
