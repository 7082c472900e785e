// Command faulty is a solver plugin for the SDK's tests. Its configuration
// key "mode" picks how Present behaves: "ok" succeeds and logs, "panic"
// panics, "hang" never answers, "exit" kills the process, "env" fails with
// the plugin's environment as its message, "levels" logs one record at each
// level and succeeds. With $FAULTY_PIDFILE set, it writes its process id
// there when it starts.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk"
)

type solver struct {
	mu   sync.Mutex
	mode string
}

func (s *solver) Info(context.Context, *sdk.InfoRequest) (*sdk.InfoResponse, error) {
	return &sdk.InfoResponse{Name: "faulty", Version: "test", ChallengeTypes: []string{"http-01"}, IdentifierTypes: []string{"dns"}}, nil
}

func (s *solver) Configure(_ context.Context, req *sdk.ConfigureRequest) (*sdk.ConfigureResponse, error) {
	var cfg struct {
		Mode string `json:"mode"`
	}
	if err := sdk.DecodeConfig(req.Config, &cfg); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.mode = cfg.Mode
	s.mu.Unlock()
	return &sdk.ConfigureResponse{}, nil
}

func (s *solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	s.mu.Lock()
	mode := s.mode
	s.mu.Unlock()
	switch mode {
	case "panic":
		panic("boom in " + req.Challenge.Identifier.Value)
	case "hang":
		select {}
	case "exit":
		os.Exit(3)
	case "env":
		return nil, fmt.Errorf("env: %s", strings.Join(os.Environ(), ";"))
	case "levels":
		l := sdk.Logger().With("domain", req.Challenge.Identifier.Value)
		l.Debug("at debug", "count", 3)
		l.Info("at info", "took", 1500*time.Millisecond)
		l.Warn("at warn")
		l.Error("at error")
		return &sdk.PresentResponse{}, nil
	}
	sdk.Logger().Info("presenting", "challenge", req.Challenge)
	fmt.Println("printed to stdout for", req.Challenge.Identifier.Value)
	return &sdk.PresentResponse{}, nil
}

func (s *solver) CleanUp(context.Context, *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	return &sdk.CleanUpResponse{}, nil
}

func main() {
	if f := os.Getenv("FAULTY_PIDFILE"); f != "" {
		if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	sdk.Serve(&solver{})
}
