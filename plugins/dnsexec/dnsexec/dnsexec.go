// Package dnsexec solves dns-01 challenges (RFC 8555 §8.4) with a program
// of the user's that changes the DNS, then waits for propagation.
//
// The program is run without a shell, as
//
//	program present <fqdn> <value>
//	program cleanup <fqdn> <value>
//
// like lego's exec provider, so existing scripts work: fqdn is the TXT
// record's fully qualified name with its final dot, after following a CNAME
// on _acme-challenge.<domain> (delegation), and value the record's content.
// Arguments are positional; value is base64url and may begin with '-'. The
// program gets the plugin's environment (acmehook's minimal one: PATH, HOME,
// TMPDIR and the variables the plugin's configuration passes through, never
// go-plugin's handshake variables), the configured env table, and these
// variables, whose ACMEHOOK_ prefix is reserved (an env key with it is a
// configuration error):
//
//	ACMEHOOK_ACTION             present or cleanup
//	ACMEHOOK_DOMAIN             the identifier, without "*."
//	ACMEHOOK_WILDCARD           "true" for a wildcard name, else "false"
//	ACMEHOOK_RECORD_NAME        same as fqdn
//	ACMEHOOK_RECORD_VALUE       same as value
//	ACMEHOOK_TOKEN              the challenge token
//	ACMEHOOK_KEY_AUTHORIZATION  the key authorization
//
// The program runs in the plugin's working directory, which acmehook sets to
// the directory of its configuration file, so relative paths inside a hook
// work as they do in the configuration. It runs in its own process group,
// which is killed at the timeout; its stdout and stderr are captured up to
// output_limit bytes and logged.
// After present, Wait asks every authoritative nameserver of the record's
// zone (or the configured resolvers, when no NS records are found) until
// each answers the value (plugin/sdk/dns01). acmehook runs at most
// max_calls (default 4) of the plugin's calls at once, and so at most that
// many programs.
//
// A relative program path is relative to the plugin's working directory
// (acmehook sets it to the directory of its configuration file), made
// absolute when the plugin is configured and never looked up in PATH.
//
// Configuration:
//
//	program              = "/usr/local/bin/dns-hook"  # required
//	env                  = { PROVIDER_TOKEN = "..." }  # added to the program's environment
//	timeout              = "2m"                        # per program run
//	output_limit         = 65536                       # bytes of output kept
//	resolvers            = ["192.0.2.53:53"]           # default: /etc/resolv.conf
//	propagation_timeout  = "5m"
//	propagation_interval = "5s"
//	skip_propagation     = false
package dnsexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/dns01"
)

// Version is the plugin's version.
const Version = "1.0.0"

// Defaults of the configuration.
const (
	DefaultTimeout             = 2 * time.Minute
	DefaultOutputLimit         = 64 << 10
	DefaultPropagationTimeout  = 5 * time.Minute
	DefaultPropagationInterval = 5 * time.Second
)

// ErrInvalidName is returned for a domain, record name or CNAME target
// that is not a plain DNS name; such a name is never passed to the program.
var ErrInvalidName = dns01.ErrInvalidName

// Config is the plugin's configuration table; the embedded dns01.Config
// holds resolvers, propagation_timeout, propagation_interval and
// skip_propagation.
type Config struct {
	Program     string            `json:"program"`
	Env         map[string]string `json:"env"`
	Timeout     sdk.Duration      `json:"timeout"`
	OutputLimit int               `json:"output_limit"`
	dns01.Config
}

// Plugin describes the dnsexec plugin to sdk.Serve.
var Plugin = sdk.Plugin{
	Name:                "dnsexec",
	Version:             Version,
	ChallengeTypes:      []string{acme.ChallengeDNS01},
	IdentifierTypes:     []string{acme.IdentifierDNS},
	WaitsForPropagation: true,
	New:                 func(_ context.Context, cfg sdk.Config) (sdk.Solver, error) { return New(cfg) },
}

// Solver is the dnsexec solver. Its methods are safe for concurrent use.
type Solver struct {
	cfg Config
	dir string // the program's working directory
	log *slog.Logger
}

// New checks the configuration and returns the solver. The program runs
// in the plugin's working directory (acmehook's configuration directory),
// which is also what a relative program path is relative to.
func New(c sdk.Config) (*Solver, error) {
	cfg := Config{
		Timeout:     sdk.Duration(DefaultTimeout),
		OutputLimit: DefaultOutputLimit,
		Config: dns01.Config{
			Timeout:  sdk.Duration(DefaultPropagationTimeout),
			Interval: sdk.Duration(DefaultPropagationInterval),
		},
	}
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("finding the working directory: %w", err)
	}
	var errs []error
	if cfg.Program != "" && !filepath.IsAbs(cfg.Program) {
		// Relative to the working directory, never looked up in PATH.
		cfg.Program = filepath.Join(dir, cfg.Program)
	}
	switch fi, err := os.Stat(cfg.Program); {
	case cfg.Program == "":
		errs = append(errs, errors.New("program is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("program: %w", err))
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		errs = append(errs, fmt.Errorf("program: %s is not executable", cfg.Program))
	}
	for k := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "ACMEHOOK_") {
			errs = append(errs, fmt.Errorf("env: invalid variable name %q (the ACMEHOOK_ prefix is reserved)", k))
		}
	}
	if cfg.Timeout <= 0 || cfg.Config.Timeout <= 0 || cfg.Interval <= 0 {
		errs = append(errs, errors.New("timeout, propagation_timeout and propagation_interval must be positive"))
	}
	if cfg.OutputLimit <= 0 {
		errs = append(errs, errors.New("output_limit must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Solver{cfg: cfg, dir: dir, log: c.Log()}, nil
}

// Present runs "program present <fqdn> <value>".
func (s *Solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	return &sdk.PresentResponse{}, s.run(ctx, "present", req.Challenge)
}

// CleanUp runs "program cleanup <fqdn> <value>".
func (s *Solver) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	return &sdk.CleanUpResponse{}, s.run(ctx, "cleanup", req.Challenge)
}

// Wait waits until every authoritative nameserver answers the record.
func (s *Solver) Wait(ctx context.Context, req *sdk.WaitRequest) (*sdk.WaitResponse, error) {
	if err := dns01.CheckChallenge(req.Challenge); err != nil {
		return nil, err
	}
	return &sdk.WaitResponse{}, s.cfg.Config.Wait(ctx, req.Challenge, s.log)
}

// run runs the program for action and the challenge.
func (s *Solver) run(ctx context.Context, action string, c sdk.Challenge) error {
	cfg := s.cfg
	if err := dns01.CheckChallenge(c); err != nil {
		return err
	}
	fqdn, err := cfg.RecordName(ctx, c, s.log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Program, action, fqdn, c.DNS01RecordValue)
	cmd.Env = programEnv(cfg.Env, action, fqdn, c)
	cmd.Dir = s.dir
	out := &capped{limit: cfg.OutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	// The program and everything it starts form one process group, killed
	// as a whole when ctx ends; on Linux the program is also killed when
	// the plugin dies.
	cmd.SysProcAttr = procAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err = cmd.Run()
	attrs := []any{"action", action, "fqdn", fqdn, "duration", time.Since(start).Round(time.Millisecond)}
	if out.Len() > 0 || out.dropped > 0 {
		attrs = append(attrs, "output", out.String(), "output_dropped_bytes", out.dropped)
	}
	if ctx.Err() != nil && err != nil {
		s.log.Error("program timed out", attrs...)
		return fmt.Errorf("running %s %s %s: killed: %w", cfg.Program, action, fqdn, ctx.Err())
	}
	if err != nil {
		s.log.Error("program failed", append(attrs, "error", err)...)
		return fmt.Errorf("running %s %s %s: %w: %s", cfg.Program, action, fqdn, err, tail(out.String(), 512))
	}
	s.log.Info("program ran", attrs...)
	return nil
}

// programEnv is the program's whole environment: the plugin's own (the
// minimal environment acmehook starts it with, including the variables its
// configuration passes through) without go-plugin's handshake variables
// (PLUGIN_*, ACMEHOOK_PLUGIN), then the env table, which wins over a
// variable of the same name, then the ACMEHOOK_* variables.
func programEnv(extra map[string]string, action, fqdn string, c sdk.Challenge) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := extra[k]; ok || strings.HasPrefix(k, "PLUGIN_") || strings.HasPrefix(k, "ACMEHOOK_") {
			continue
		}
		env = append(env, kv)
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		env = append(env, k+"="+extra[k])
	}
	return append(env,
		"ACMEHOOK_ACTION="+action,
		"ACMEHOOK_DOMAIN="+c.Identifier.Value,
		fmt.Sprintf("ACMEHOOK_WILDCARD=%t", c.Identifier.Wildcard),
		"ACMEHOOK_RECORD_NAME="+fqdn,
		"ACMEHOOK_RECORD_VALUE="+c.DNS01RecordValue,
		"ACMEHOOK_TOKEN="+c.Token,
		"ACMEHOOK_KEY_AUTHORIZATION="+c.KeyAuthorization,
	)
}

// capped keeps the first limit bytes written to it and counts the rest.
type capped struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	limit   int
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.limit - c.buf.Len()
	if room >= len(p) {
		c.buf.Write(p)
	} else {
		if room > 0 {
			c.buf.Write(p[:room])
		}
		c.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

func (c *capped) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Len()
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// tail returns the last n bytes of s, trimmed.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
