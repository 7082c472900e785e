package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	solverv1 "github.com/acmehook/acmehook/plugin/sdk/internal/proto/acmehook/solver/v1"
)

// grpcPlugin is the go-plugin glue of both sides.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Solver // plugin side only
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	solverv1.RegisterSolverServer(s, &server{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return solverv1.NewSolverClient(c), nil
}

// server adapts a Solver to the generated gRPC service. A panic in the
// solver becomes an error for that call, with its stack in the plugin's log,
// so one bad challenge does not take the process down.
type server struct {
	solverv1.UnimplementedSolverServer
	impl Solver
}

// guard turns a panic into a gRPC error.
func guard(method string, err *error) {
	if r := recover(); r != nil {
		logger.Error("plugin panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "plugin panicked in %s: %v", method, r)
	}
}

func (s *server) Info(ctx context.Context, _ *solverv1.InfoRequest) (out *solverv1.InfoResponse, err error) {
	defer guard("Info", &err)
	r, err := s.impl.Info(ctx, &InfoRequest{})
	if err != nil {
		return nil, err
	}
	return &solverv1.InfoResponse{
		Name:                r.Name,
		Version:             r.Version,
		ChallengeTypes:      r.ChallengeTypes,
		IdentifierTypes:     r.IdentifierTypes,
		WaitsForPropagation: r.WaitsForPropagation,
	}, nil
}

func (s *server) Configure(ctx context.Context, req *solverv1.ConfigureRequest) (out *solverv1.ConfigureResponse, err error) {
	defer guard("Configure", &err)
	if _, err := s.impl.Configure(ctx, &ConfigureRequest{Config: req.GetConfig().AsMap()}); err != nil {
		return nil, err
	}
	return &solverv1.ConfigureResponse{}, nil
}

func (s *server) Present(ctx context.Context, req *solverv1.PresentRequest) (out *solverv1.PresentResponse, err error) {
	defer guard("Present", &err)
	if _, err := s.impl.Present(ctx, &PresentRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.PresentResponse{}, nil
}

func (s *server) Wait(ctx context.Context, req *solverv1.WaitRequest) (out *solverv1.WaitResponse, err error) {
	defer guard("Wait", &err)
	w, ok := s.impl.(Waiter)
	if !ok {
		return &solverv1.WaitResponse{}, nil
	}
	if _, err := w.Wait(ctx, &WaitRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.WaitResponse{}, nil
}

func (s *server) CleanUp(ctx context.Context, req *solverv1.CleanUpRequest) (out *solverv1.CleanUpResponse, err error) {
	defer guard("CleanUp", &err)
	if _, err := s.impl.CleanUp(ctx, &CleanUpRequest{Challenge: challengeFromProto(req.GetChallenge())}); err != nil {
		return nil, err
	}
	return &solverv1.CleanUpResponse{}, nil
}

func challengeToProto(c Challenge) *solverv1.Challenge {
	return &solverv1.Challenge{
		Type: c.Type,
		Identifier: &solverv1.Identifier{
			Type:     c.Identifier.Type,
			Value:    c.Identifier.Value,
			Wildcard: c.Identifier.Wildcard,
		},
		Token:            c.Token,
		KeyAuthorization: c.KeyAuthorization,
		Dns01RecordName:  c.DNS01RecordName,
		Dns01RecordValue: c.DNS01RecordValue,
		TlsAlpn01CertPem: c.TLSALPN01CertPEM,
		TlsAlpn01KeyPem:  c.TLSALPN01KeyPEM,
		Url:              c.URL,
	}
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

// configToProto converts a configuration table for the wire. A JSON round
// trip first turns what a TOML decoder produces (int64, time.Time,
// []map[string]any) into the JSON types structpb accepts.
func configToProto(config map[string]any) (*structpb.Struct, error) {
	b, err := json.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("converting configuration: %w", err)
	}
	plain := map[string]any{}
	if config != nil {
		if err := json.Unmarshal(b, &plain); err != nil {
			return nil, fmt.Errorf("converting configuration: %w", err)
		}
	}
	s, err := structpb.NewStruct(plain)
	if err != nil {
		return nil, fmt.Errorf("converting configuration: %w", err)
	}
	return s, nil
}
