// Command example is a complete acmehook dns-01 solver plugin for a
// made-up DNS provider, written to be copied by a vendor. The provider's API
// takes POST <endpoint>/set-txt and POST <endpoint>/clear-txt with a JSON
// body {"host": "_acme-challenge.example.com.", "value": "..."} and a bearer
// token (the API of pebble-challtestsrv, so the tests can drive it).
//
// Configuration (the plugin's table in acmehook's configuration):
//
//	endpoint  = "https://dns.example.net/api"   # required
//	token_env = "EXAMPLE_DNS_TOKEN"             # environment variable holding the API token
//	timeout   = "10s"                           # per API request
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk"
)

type config struct {
	Endpoint string       `json:"endpoint"`
	TokenEnv string       `json:"token_env"`
	Timeout  sdk.Duration `json:"timeout"`
}

// solver keeps its configuration; the API token never leaves this process.
type solver struct {
	mu     sync.Mutex
	cfg    config
	token  string
	client *http.Client
}

func (s *solver) Info(context.Context, *sdk.InfoRequest) (*sdk.InfoResponse, error) {
	return &sdk.InfoResponse{
		Name:            "example",
		Version:         "1.0.0",
		ChallengeTypes:  []string{"dns-01"},
		IdentifierTypes: []string{"dns"},
	}, nil
}

func (s *solver) Configure(_ context.Context, req *sdk.ConfigureRequest) (*sdk.ConfigureResponse, error) {
	cfg := config{Timeout: sdk.Duration(10 * time.Second)}
	if err := sdk.DecodeConfig(req.Config, &cfg); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return nil, errors.New("endpoint is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	if cfg.TokenEnv != "" {
		s.token = os.Getenv(cfg.TokenEnv)
	}
	s.client = &http.Client{Timeout: time.Duration(cfg.Timeout)}
	return &sdk.ConfigureResponse{}, nil
}

func (s *solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	c := req.Challenge
	if c.Type != "dns-01" {
		return nil, fmt.Errorf("challenge type %s not supported", c.Type)
	}
	sdk.Logger().Info("setting TXT record", "name", c.DNS01RecordName)
	return &sdk.PresentResponse{}, s.call(ctx, "/set-txt", c.DNS01RecordName, c.DNS01RecordValue)
}

func (s *solver) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	c := req.Challenge
	sdk.Logger().Info("clearing TXT record", "name", c.DNS01RecordName)
	return &sdk.CleanUpResponse{}, s.call(ctx, "/clear-txt", c.DNS01RecordName, c.DNS01RecordValue)
}

// call POSTs one record change to the provider's API.
func (s *solver) call(ctx context.Context, path, host, value string) error {
	s.mu.Lock()
	cfg, token, client := s.cfg, s.token, s.client
	s.mu.Unlock()
	if client == nil {
		return errors.New("not configured")
	}
	body, err := json.Marshal(map[string]string{"host": host, "value": value})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Endpoint+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("calling %s: %s: %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func main() { sdk.Serve(&solver{}) }
