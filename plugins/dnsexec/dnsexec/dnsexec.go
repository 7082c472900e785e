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
// go-plugin's handshake variables), the configured env table, and:
//
//	ACMEHOOK_ACTION             present or cleanup
//	ACMEHOOK_DOMAIN             the identifier, without "*."
//	ACMEHOOK_WILDCARD           "true" for a wildcard name, else "false"
//	ACMEHOOK_RECORD_NAME        same as fqdn
//	ACMEHOOK_RECORD_VALUE       same as value
//	ACMEHOOK_TOKEN              the challenge token
//	ACMEHOOK_KEY_AUTHORIZATION  the key authorization
//
// The program runs in its own process group, which is killed at the timeout;
// its stdout and stderr are captured up to output_limit bytes and logged.
// After present, Wait asks every authoritative nameserver of the record's
// zone (or the configured resolvers, when no NS records are found) until
// each answers the value.
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

// ErrInvalidName is returned for a domain or record name that is not a
// plain DNS name; such a name is never passed to the program.
var ErrInvalidName = errors.New("dnsexec: not a valid DNS name")

// Config is the plugin's configuration table.
type Config struct {
	Program             string            `json:"program"`
	Env                 map[string]string `json:"env"`
	Timeout             sdk.Duration      `json:"timeout"`
	OutputLimit         int               `json:"output_limit"`
	Resolvers           []string          `json:"resolvers"`
	PropagationTimeout  sdk.Duration      `json:"propagation_timeout"`
	PropagationInterval sdk.Duration      `json:"propagation_interval"`
	SkipPropagation     bool              `json:"skip_propagation"`
}

// Solver is the dnsexec solver. Its methods are safe for concurrent use.
type Solver struct {
	// Logger receives progress records; nil discards.
	Logger *slog.Logger

	mu  sync.Mutex
	cfg Config
}

// New returns a Solver that logs to the plugin's log.
func New() *Solver { return &Solver{Logger: sdk.Logger()} }

func (s *Solver) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Solver) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Info describes the plugin.
func (s *Solver) Info(context.Context, *sdk.InfoRequest) (*sdk.InfoResponse, error) {
	return &sdk.InfoResponse{
		Name:                "dnsexec",
		Version:             Version,
		ChallengeTypes:      []string{acme.ChallengeDNS01},
		IdentifierTypes:     []string{acme.IdentifierDNS},
		WaitsForPropagation: true,
	}, nil
}

// Configure checks and keeps the configuration.
func (s *Solver) Configure(_ context.Context, req *sdk.ConfigureRequest) (*sdk.ConfigureResponse, error) {
	cfg := Config{
		Timeout:             sdk.Duration(DefaultTimeout),
		OutputLimit:         DefaultOutputLimit,
		PropagationTimeout:  sdk.Duration(DefaultPropagationTimeout),
		PropagationInterval: sdk.Duration(DefaultPropagationInterval),
	}
	if err := sdk.DecodeConfig(req.Config, &cfg); err != nil {
		return nil, err
	}
	var errs []error
	if cfg.Program != "" {
		// Relative to the working directory (acmehook's configuration
		// directory), never looked up in PATH.
		abs, err := filepath.Abs(cfg.Program)
		if err != nil {
			return nil, fmt.Errorf("program: resolving %q: %w", cfg.Program, err)
		}
		cfg.Program = abs
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
			errs = append(errs, fmt.Errorf("env: invalid variable name %q", k))
		}
	}
	if cfg.Timeout <= 0 || cfg.PropagationTimeout <= 0 || cfg.PropagationInterval <= 0 {
		errs = append(errs, errors.New("timeout, propagation_timeout and propagation_interval must be positive"))
	}
	if cfg.OutputLimit <= 0 {
		errs = append(errs, errors.New("output_limit must be positive"))
	}
	if len(cfg.Resolvers) == 0 {
		r, err := systemResolvers()
		if err != nil {
			errs = append(errs, fmt.Errorf("resolvers: none configured and %w", err))
		}
		cfg.Resolvers = r
	}
	for i, r := range cfg.Resolvers {
		cfg.Resolvers[i] = withPort(r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
	return &sdk.ConfigureResponse{}, nil
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
	cfg := s.config()
	if cfg.SkipPropagation {
		return &sdk.WaitResponse{}, nil
	}
	if err := checkChallenge(req.Challenge); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.PropagationTimeout))
	defer cancel()
	r := &resolver{servers: cfg.Resolvers, log: s.log()}
	fqdn, err := r.followCNAME(ctx, req.Challenge.DNS01RecordName)
	if err != nil {
		return nil, err
	}
	return &sdk.WaitResponse{}, r.waitTXT(ctx, fqdn, req.Challenge.DNS01RecordValue, time.Duration(cfg.PropagationInterval))
}

// checkChallenge refuses a challenge whose values are not what a dns-01
// challenge derives, before any of them reach the program.
func checkChallenge(c sdk.Challenge) error {
	if c.Type != acme.ChallengeDNS01 {
		return fmt.Errorf("challenge type %q not supported: dnsexec solves only dns-01", c.Type)
	}
	if err := checkName(c.Identifier.Value); err != nil {
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

// checkName accepts a DNS name of letters, digits, '-' and '_' in labels
// of at most 63 bytes that do not begin with '-', with an optional final dot.
func checkName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: %q", ErrInvalidName, name)
			}
		}
	}
	return nil
}

// run runs the program for action and the challenge.
func (s *Solver) run(ctx context.Context, action string, c sdk.Challenge) error {
	cfg := s.config()
	if cfg.Program == "" {
		return errors.New("not configured")
	}
	if err := checkChallenge(c); err != nil {
		return err
	}
	fqdn := c.DNS01RecordName
	r := &resolver{servers: cfg.Resolvers, log: s.log()}
	switch target, err := r.followCNAME(ctx, fqdn); {
	case err == nil:
		fqdn = target
	case errors.Is(err, ErrInvalidName):
		// A CNAME to a name the program must not see is refused, not
		// worked around by setting the record at the original name.
		return err
	default:
		s.log().Warn("not following CNAME", "name", fqdn, "error", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Program, action, fqdn, c.DNS01RecordValue)
	cmd.Env = programEnv(cfg.Env, action, fqdn, c)
	cmd.Dir = os.TempDir()
	out := &capped{limit: cfg.OutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	// The program and everything it starts form one process group, killed
	// as a whole when ctx ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	attrs := []any{"action", action, "fqdn", fqdn, "duration", time.Since(start).Round(time.Millisecond)}
	if out.Len() > 0 || out.dropped > 0 {
		attrs = append(attrs, "output", out.String(), "output_dropped_bytes", out.dropped)
	}
	if ctx.Err() != nil && err != nil {
		s.log().Error("program timed out", attrs...)
		return fmt.Errorf("running %s %s %s: killed: %w", cfg.Program, action, fqdn, ctx.Err())
	}
	if err != nil {
		s.log().Error("program failed", append(attrs, "error", err)...)
		return fmt.Errorf("running %s %s %s: %w: %s", cfg.Program, action, fqdn, err, tail(out.String(), 512))
	}
	s.log().Info("program ran", attrs...)
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
