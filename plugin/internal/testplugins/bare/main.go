// Command bare is a solver plugin for the host's tests written the way a
// plugin in another language is: from solver.proto and docs/plugins.md's
// description of go-plugin's handshake alone, without go-plugin or the
// SDK's Serve. Present writes the key authorization to $BARE_DIR/<token>,
// CleanUp removes it. With $BARE_NAME_BYTES set, Info answers a name of that
// many bytes (a plugin that ignores any message size limit).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/emptypb"

	solverv1 "github.com/acmehook/acmehook/plugin/internal/proto/acmehook/solver/v1"
)

// token is what this plugin accepts as a file name: strict base64url.
var token = regexp.MustCompile(`^[A-Za-z0-9_-]{22,}$`)

type solver struct {
	solverv1.UnimplementedSolverServer
	dir string
}

func (s *solver) Info(context.Context, *solverv1.InfoRequest) (*solverv1.InfoResponse, error) {
	name := "bare"
	if n, err := strconv.Atoi(os.Getenv("BARE_NAME_BYTES")); err == nil {
		name = strings.Repeat("n", n)
	}
	return &solverv1.InfoResponse{Name: name, Version: "0.1", ChallengeTypes: []string{"http-01"}, IdentifierTypes: []string{"dns"}}, nil
}

func (s *solver) Configure(_ context.Context, req *solverv1.ConfigureRequest) (*solverv1.ConfigureResponse, error) {
	if len(req.GetConfig().GetFields()) != 0 {
		return nil, errors.New("bare takes no configuration")
	}
	return &solverv1.ConfigureResponse{}, nil
}

func (s *solver) path(c *solverv1.Challenge) (string, error) {
	if !token.MatchString(c.GetToken()) {
		return "", fmt.Errorf("token %q is not base64url", c.GetToken())
	}
	return filepath.Join(s.dir, c.GetToken()), nil
}

func (s *solver) Present(_ context.Context, req *solverv1.PresentRequest) (*solverv1.PresentResponse, error) {
	p, err := s.path(req.GetChallenge())
	if err != nil {
		return nil, err
	}
	return &solverv1.PresentResponse{}, os.WriteFile(p, []byte(req.GetChallenge().GetKeyAuthorization()), 0o644)
}

func (s *solver) CleanUp(_ context.Context, req *solverv1.CleanUpRequest) (*solverv1.CleanUpResponse, error) {
	p, err := s.path(req.GetChallenge())
	if err != nil {
		return nil, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return &solverv1.CleanUpResponse{}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	// 1. The cookie: absent means a person ran the program.
	if os.Getenv("ACMEHOOK_PLUGIN") != "solver" {
		return errors.New("bare is an acmehook solver plugin: acmehook starts it")
	}
	// 2. The host lists the solver protocol versions it speaks.
	if !slices.Contains(strings.Split(os.Getenv("PLUGIN_PROTOCOL_VERSIONS"), ","), "1") {
		return fmt.Errorf("host speaks protocol versions %q, not 1", os.Getenv("PLUGIN_PROTOCOL_VERSIONS"))
	}
	// 3. AutoMTLS: trust only the host's certificate; serve our own.
	clients := x509.NewCertPool()
	if !clients.AppendCertsFromPEM([]byte(os.Getenv("PLUGIN_CLIENT_CERT"))) {
		return errors.New("PLUGIN_CLIENT_CERT holds no certificate")
	}
	cert, der, err := selfSigned()
	if err != nil {
		return err
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
		MinVersion:   tls.VersionTLS12,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.MaxSendMsgSize(1<<30))
	solverv1.RegisterSolverServer(srv, &solver{dir: os.Getenv("BARE_DIR")})
	// go-plugin's plugin.GRPCController (grpc_controller.proto): the host
	// asks the plugin to exit with Shutdown when it is done with it.
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "plugin.GRPCController",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Shutdown", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			go srv.GracefulStop()
			return new(emptypb.Empty), nil
		}}},
	}, struct{}{})
	// 4. The handshake line: go-plugin core protocol 1, solver protocol 1,
	// address, gRPC, the server certificate as unpadded standard base64 DER.
	fmt.Printf("1|1|tcp|%s|grpc|%s\n", ln.Addr(), base64.RawStdEncoding.EncodeToString(der))
	return srv.Serve(ln)
}

// selfSigned returns a certificate for "localhost", the name the host
// verifies, and its DER.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, der, nil
}
