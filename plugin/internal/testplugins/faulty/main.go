// Command faulty is a solver plugin for the SDK's and the host's tests. Its
// configuration key "mode" picks how Present behaves: "ok" succeeds and
// logs, "panic" panics, "hang" never answers, "exit" kills the process,
// "env" fails with the plugin's environment as its message, "levels" logs
// one record at each level and succeeds, "secret" fails with its "token"
// key's value in the message, "biglog" logs and prints a line of
// "bytes" bytes, "slow" takes 100 ms and counts the Presents in flight
// (CleanUp of "report" fails with the highest count seen). A "new_error"
// key makes the constructor fail with that text. With $FAULTY_PIDFILE set,
// it writes its process id there when it starts; with $FAULTY_WAITS=true it
// claims to wait for propagation, which it does not.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk"
)

type config struct {
	Mode     string `json:"mode"`
	Token    string `json:"token"`
	Bytes    int    `json:"bytes"`
	NewError string `json:"new_error"`
}

type solver struct {
	cfg config
	log *slog.Logger

	mu       sync.Mutex
	inFlight int
	maxSeen  int
}

func newSolver(_ context.Context, c sdk.Config) (sdk.Solver, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.NewError != "" {
		return nil, errors.New(cfg.NewError)
	}
	return &solver{cfg: cfg, log: c.Log()}, nil
}

func (s *solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	switch s.cfg.Mode {
	case "panic":
		panic("boom in " + req.Challenge.Identifier.Value)
	case "hang":
		select {}
	case "exit":
		os.Exit(3)
	case "env":
		return nil, fmt.Errorf("env: %s", strings.Join(os.Environ(), ";"))
	case "secret":
		s.log.Error("calling the API with token " + s.cfg.Token)
		return nil, fmt.Errorf("API refused token %q", s.cfg.Token)
	case "biglog":
		line := strings.Repeat("x", s.cfg.Bytes)
		s.log.Info(line)
		fmt.Println(line)
		return &sdk.PresentResponse{}, nil
	case "slow":
		s.mu.Lock()
		s.inFlight++
		s.maxSeen = max(s.maxSeen, s.inFlight)
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
		return &sdk.PresentResponse{}, nil
	case "levels":
		l := s.log.With("domain", req.Challenge.Identifier.Value)
		l.Debug("at debug", "count", 3)
		l.Info("at info", "took", 1500*time.Millisecond)
		l.Warn("at warn")
		l.Error("at error")
		return &sdk.PresentResponse{}, nil
	}
	s.log.Info("presenting", "challenge", req.Challenge)
	fmt.Println("printed to stdout for", req.Challenge.Identifier.Value)
	return &sdk.PresentResponse{}, nil
}

func (s *solver) CleanUp(_ context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	if s.cfg.Mode == "slow" && req.Challenge.Identifier.Value == "report" {
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, fmt.Errorf("at most %d in flight", s.maxSeen)
	}
	return &sdk.CleanUpResponse{}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	if f := os.Getenv("FAULTY_PIDFILE"); f != "" {
		if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return err
		}
	}
	return sdk.Serve(sdk.Plugin{
		Name:                "faulty",
		Version:             "test",
		ChallengeTypes:      []string{"http-01"},
		WaitsForPropagation: os.Getenv("FAULTY_WAITS") == "true",
		New:                 newSolver,
	})
}
