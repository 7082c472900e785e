package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	solverv1 "github.com/acmehook/acmehook/plugin/internal/proto/acmehook/solver/v1"
)

// grpcPlugin is the plugin side of go-plugin's glue.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv *server
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	solverv1.RegisterSolverServer(s, p.srv)
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("sdk: the plugin side has no client")
}

// server adapts a Plugin to the generated gRPC service: Info answers from
// the description, Configure builds the solver once with New, and the
// challenge calls go to that solver. A panic in the solver becomes an error
// for that call, with its stack in the plugin's log, so one bad challenge
// does not take the process down.
type server struct {
	solverv1.UnimplementedSolverServer
	desc   Plugin
	logger *slog.Logger

	configuring sync.Mutex   // held by Configure while New runs
	impl        atomic.Value // the Solver, stored once by Configure
}

// solver returns the solver, or nil before Configure. It never waits for a
// Configure in progress, so Info answers while New runs.
func (s *server) solver() Solver {
	impl, _ := s.impl.Load().(Solver)
	return impl
}

// guard turns a panic into a gRPC error.
func (s *server) guard(method string, err *error) {
	if r := recover(); r != nil {
		s.logger.Error("plugin panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "plugin panicked in %s: %v", method, r)
	}
}

// configured returns the solver, or a FailedPrecondition error before
// Configure.
func (s *server) configured() (Solver, error) {
	if impl := s.solver(); impl != nil {
		return impl, nil
	}
	return nil, status.Error(codes.FailedPrecondition, "not configured: the host calls Configure before any challenge")
}

func (s *server) Info(context.Context, *solverv1.InfoRequest) (*solverv1.InfoResponse, error) {
	ids := s.desc.IdentifierTypes
	if len(ids) == 0 {
		ids = []string{"dns"}
	}
	types := s.desc.ChallengeTypes
	if o, ok := s.solver().(Offerer); ok {
		types = o.Offers()
	}
	return &solverv1.InfoResponse{
		Name:                s.desc.Name,
		Version:             s.desc.Version,
		ChallengeTypes:      types,
		IdentifierTypes:     ids,
		WaitsForPropagation: s.desc.WaitsForPropagation,
	}, nil
}

func (s *server) Configure(ctx context.Context, req *solverv1.ConfigureRequest) (_ *solverv1.ConfigureResponse, err error) {
	defer s.guard("Configure", &err)
	s.configuring.Lock()
	defer s.configuring.Unlock()
	if s.solver() != nil {
		return nil, status.Error(codes.FailedPrecondition, "already configured")
	}
	impl, err := s.desc.New(ctx, Config{Values: req.GetConfig().AsMap(), Logger: s.logger})
	if err != nil {
		return nil, err
	}
	if impl == nil {
		return nil, errors.New("sdk: New returned no solver and no error")
	}
	switch _, waits := impl.(Waiter); {
	case waits && !s.desc.WaitsForPropagation:
		return nil, errors.New("sdk: the solver implements Wait but Plugin.WaitsForPropagation is false, so acmehook would never call it")
	case !waits && s.desc.WaitsForPropagation:
		return nil, errors.New("sdk: Plugin.WaitsForPropagation is true but the solver does not implement Wait")
	}
	s.impl.Store(impl)
	return &solverv1.ConfigureResponse{}, nil
}

func (s *server) Present(ctx context.Context, req *solverv1.PresentRequest) (_ *solverv1.PresentResponse, err error) {
	defer s.guard("Present", &err)
	impl, err := s.configured()
	if err != nil {
		return nil, err
	}
	if _, err := impl.Present(ctx, &PresentRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.PresentResponse{}, nil
}

func (s *server) Wait(ctx context.Context, req *solverv1.WaitRequest) (_ *solverv1.WaitResponse, err error) {
	defer s.guard("Wait", &err)
	impl, err := s.configured()
	if err != nil {
		return nil, err
	}
	w, ok := impl.(Waiter)
	if !ok {
		return &solverv1.WaitResponse{}, nil
	}
	if _, err := w.Wait(ctx, &WaitRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.WaitResponse{}, nil
}

func (s *server) CleanUp(ctx context.Context, req *solverv1.CleanUpRequest) (_ *solverv1.CleanUpResponse, err error) {
	defer s.guard("CleanUp", &err)
	impl, err := s.configured()
	if err != nil {
		return nil, err
	}
	if _, err := impl.CleanUp(ctx, &CleanUpRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.CleanUpResponse{}, nil
}

func challengeFromProto(c *solverv1.Challenge) Challenge {
	return Challenge{
		Type: c.GetType(),
		Identifier: Identifier{
			Type:     c.GetIdentifier().GetType(),
			Value:    c.GetIdentifier().GetValue(),
			Wildcard: c.GetIdentifier().GetWildcard(),
		},
		Token:            c.GetToken(),
		KeyAuthorization: c.GetKeyAuthorization(),
		DNS01RecordName:  c.GetDns01RecordName(),
		DNS01RecordValue: c.GetDns01RecordValue(),
		TLSALPN01CertPEM: c.GetTlsAlpn01CertPem(),
		TLSALPN01KeyPEM:  c.GetTlsAlpn01KeyPem(),
		URL:              c.GetUrl(),
	}
}
