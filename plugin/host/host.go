// Package host is acmehook's side of the solver plugin protocol: it starts
// a plugin executable (HashiCorp go-plugin, gRPC, mutual TLS), calls it and
// stops it, and derives the challenges it is handed. A plugin imports
// plugin/sdk, never this package.
//
// The host kills the plugin process on every path: Close stops it, a failed
// Launch leaves nothing running, and on Linux the kernel kills it when the
// host dies (a parent-death signal; plugin/sdk's Serve also exits when its
// parent goes away). Errors name the plugin once:
// "plugin webroot: present example.com: ...".
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	solverv1 "github.com/acmehook/acmehook/plugin/internal/proto/acmehook/solver/v1"
	"github.com/acmehook/acmehook/plugin/internal/wire"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Errors of the host side.
var (
	// ErrChecksum is returned by Launch when the plugin binary's SHA-256
	// differs from LaunchOptions.SHA256.
	ErrChecksum = errors.New("host: plugin binary checksum mismatch")
	// ErrProtocolVersion is returned by Launch when the plugin speaks
	// another version of the solver protocol than sdk.ProtocolVersion.
	ErrProtocolVersion = errors.New("host: plugin speaks another solver protocol version")
	// ErrExited is returned by a call when the plugin process has exited
	// (it crashed, or was killed).
	ErrExited = errors.New("host: plugin process exited")
	// ErrNotExecutable is returned by CheckExecutable and Launch for a
	// path that is not an executable regular file.
	ErrNotExecutable = errors.New("host: not an executable file")
	// ErrNoHandshake is returned by Launch when the process exits, or
	// prints something else, before go-plugin's handshake line: not an
	// acmehook plugin, or one that failed at its start (its stderr is
	// logged).
	ErrNoHandshake = errors.New("host: no plugin handshake")
)

// Defaults of LaunchOptions.
const (
	// DefaultStartTimeout bounds Launch when neither StartTimeout nor the
	// context sets a shorter limit.
	DefaultStartTimeout = 10 * time.Second
	// DefaultMaxCalls is how many Present, Wait and CleanUp calls one
	// plugin process serves at once when MaxCalls is zero.
	DefaultMaxCalls = 4
)

// maxErrorText bounds the part of a plugin's error message kept in an
// error; the rest is cut with a note.
const maxErrorText = 4 << 10

// LaunchOptions say how to start a plugin.
type LaunchOptions struct {
	// Name names the plugin in errors and logs (the configuration's name
	// for it, such as "webroot").
	Name string
	// Path is the plugin executable.
	Path string
	// SHA256, when set, is the hex SHA-256 the executable must have;
	// Launch refuses to start anything else (go-plugin's SecureConfig).
	SHA256 string
	// Env is added to the plugin's minimal environment, as "KEY=value".
	// The plugin otherwise gets only PATH, HOME and TMPDIR from the host,
	// never the host's other variables (API tokens of other plugins).
	Env []string
	// Dir is the plugin's working directory; empty means the host's.
	// Plugins resolve relative paths in their configuration against it,
	// so acmehook sets it to the configuration file's directory.
	Dir string
	// Config, when not nil, is passed to the plugin's Configure once it has
	// started. Values are what a TOML or JSON decoder produces.
	Config map[string]any
	// Secrets are values (API tokens, passwords from the configuration)
	// replaced by "[redacted]" wherever the plugin's own text reaches the
	// host: its error messages and its log lines.
	Secrets []string
	// StartTimeout bounds the start and handshake; zero means
	// DefaultStartTimeout. A sooner ctx deadline wins.
	StartTimeout time.Duration
	// MaxCalls bounds the Present, Wait and CleanUp calls in flight at
	// once; a further call waits for one to finish (within its ctx). Zero
	// means DefaultMaxCalls.
	MaxCalls int
	// CallTimeout, when positive, bounds each Present, Wait and CleanUp
	// call from the moment it has a call slot; ctx bounds the whole.
	CallTimeout time.Duration
	// Logger receives the plugin's log lines with attribute plugin=Name;
	// nil discards them.
	Logger *slog.Logger
}

// Plugin is a running plugin process. Its methods may be called
// concurrently. Close MUST be called to stop the process.
type Plugin struct {
	name        string
	client      *plugin.Client
	rpc         solverv1.SolverClient
	kill        context.CancelFunc // ends the process's context
	closed      sync.Once
	slots       chan struct{}
	maxCalls    int
	callTimeout time.Duration
	redact      *redactor
}

// InfoRequest asks a plugin to describe itself.
type InfoRequest struct{}

// InfoResponse describes a plugin.
type InfoResponse struct {
	Name    string
	Version string
	// ChallengeTypes the plugin solves, preferred first.
	ChallengeTypes []string
	// IdentifierTypes the plugin solves: "dns", "ip".
	IdentifierTypes []string
	// WaitsForPropagation is true when the host should call Wait after
	// Present.
	WaitsForPropagation bool
}

// ConfigureRequest carries the plugin's configuration table.
type ConfigureRequest struct {
	// Config is the table as a TOML or JSON decoder produces it.
	Config map[string]any
}

// ConfigureResponse answers Configure.
type ConfigureResponse struct{}

// CheckExecutable returns an error naming path, and wrapping
// ErrNotExecutable or the os.Stat error, unless path names an executable
// regular file: what Launch checks first, for `acmehook check` to report
// before any run.
func CheckExecutable(path string) error {
	if err := checkExecutable(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// checkExecutable is CheckExecutable without the path in the error, for
// Launch's, which names it already.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w (a %s)", ErrNotExecutable, fileKind(fi.Mode()))
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%w (mode %04o)", ErrNotExecutable, fi.Mode().Perm())
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	return "special file"
}

// noHandshake replaces go-plugin's many-line explanation of a missing
// handshake with what happened: how the process exited, or the line it
// printed instead. Other errors are returned as they are.
func noHandshake(err error, client *plugin.Client, cmd *exec.Cmd) error {
	msg, unrecognized := strings.CutPrefix(err.Error(), "Unrecognized remote plugin message: ")
	if !unrecognized && err.Error() != "plugin exited before we could connect" {
		return err
	}
	if line, _, _ := strings.Cut(msg, "\n"); line != "" {
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		return fmt.Errorf("%w: the process printed %q instead", ErrNoHandshake, line)
	}
	// client.Exited is set once cmd.Wait has returned, so ProcessState
	// is complete.
	if client.Exited() && cmd.ProcessState != nil {
		return fmt.Errorf("%w: the process exited (%s) first", ErrNoHandshake, cmd.ProcessState)
	}
	return fmt.Errorf("%w: the process closed its standard output first", ErrNoHandshake)
}

// Launch starts the plugin at opts.Path, performs go-plugin's handshake
// (protocol version, mutual TLS) and, if opts.Config is not nil, configures
// it. If ctx ends before the handshake completes, the process is killed and
// Launch returns ctx's error; once launched, the plugin outlives ctx until
// Close. On error nothing is left running, and the error is the only
// report of it (nothing is logged about a process that never started).
func Launch(ctx context.Context, opts LaunchOptions) (*Plugin, error) {
	if opts.Name == "" {
		opts.Name = opts.Path
	}
	p, err := launch(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: starting %s: %w", opts.Name, opts.Path, err)
	}
	if opts.Config != nil {
		if _, err := p.Configure(ctx, &ConfigureRequest{Config: opts.Config}); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

func launch(ctx context.Context, opts LaunchOptions) (*Plugin, error) {
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkExecutable(opts.Path); err != nil {
		return nil, err
	}
	var secure *plugin.SecureConfig
	if opts.SHA256 != "" {
		sum, err := hex.DecodeString(opts.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("sha256 %q is not 64 hex digits", opts.SHA256)
		}
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	for _, kv := range opts.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("environment entry %q is not KEY=value", kv)
		}
	}
	tlsConfig, certEnv, offer, err := clientTLS()
	if err != nil {
		return nil, err
	}
	// The offered server certificate goes through a pipe that holds it
	// whole (a PEM of 1 KiB in a 64 KiB pipe buffer), closed on the host's
	// side once the process has started.
	offerR, offerW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer offerR.Close()
	_, err = offerW.Write(offer)
	if cerr := offerW.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("offering the plugin its certificate: %w", err)
	}
	// The process's own context is cancelled, killing it, when ctx ends
	// during the start (go-plugin's start watches only its timeout) and,
	// for good measure, by Close.
	procCtx, kill := context.WithCancel(context.Background())
	stopWatching := context.AfterFunc(ctx, kill)
	cmd := exec.CommandContext(procCtx, opts.Path)
	cmd.Env = append(append(minimalEnv(), opts.Env...), certEnv, wire.ServerCertEnvEntry)
	cmd.ExtraFiles = []*os.File{offerR} // fd 3, wire.ServerCertFD
	cmd.Dir = opts.Dir
	cmd.SysProcAttr = procAttr()
	cmd.Cancel = killGroup(cmd)
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("plugin", opts.Name)
	redact := newRedactor(opts.Secrets)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		Plugins:          plugin.PluginSet{wire.PluginName: grpcPlugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// Mutual TLS as go-plugin's AutoMTLS does it, with the host's
		// certificate made once per process (see clientTLS).
		TLSConfig:           tlsConfig,
		StartTimeout:        timeout,
		Logger:              newHCLogger(logger, cmd.Path, redact),
		PluginLogBufferSize: logBufferSize,
		SyncStdout:          &lineWriter{l: logger, stream: "stdout", redact: redact},
		SyncStderr:          &lineWriter{l: logger, stream: "stderr", redact: redact},
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(wire.MaxMessageSize), grpc.MaxCallSendMsgSize(wire.MaxMessageSize))},
	})
	rpc, err := client.Client()
	started := cmd.Process != nil
	if !stopWatching() {
		// ctx ended during the start and the process was killed.
		if started {
			client.Kill()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		// go-plugin's failed start has killed the process already; its
		// Kill would only warn "failed to exit gracefully" about a plugin
		// that never came up. Wait (bounded) for the process to be reaped
		// and its last log lines read.
		kill()
		for deadline := time.Now().Add(2 * time.Second); started && !client.Exited() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		if started {
			err = noHandshake(err, client, cmd)
		}
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, ErrChecksum
		}
		if strings.Contains(err.Error(), "incompatible API version") {
			return nil, fmt.Errorf("%w (acmehook speaks %d; rebuild the plugin with this acmehook's SDK): %v", ErrProtocolVersion, sdk.ProtocolVersion, err)
		}
		return nil, err
	}
	raw, err := rpc.Dispense(wire.PluginName)
	if err != nil {
		client.Kill()
		kill()
		return nil, err
	}
	maxCalls := opts.MaxCalls
	if maxCalls <= 0 {
		maxCalls = DefaultMaxCalls
	}
	return &Plugin{
		name:        opts.Name,
		client:      client,
		rpc:         raw.(solverv1.SolverClient),
		kill:        kill,
		slots:       make(chan struct{}, maxCalls),
		maxCalls:    maxCalls,
		callTimeout: opts.CallTimeout,
		redact:      redact,
	}, nil
}

// grpcPlugin is the host side of go-plugin's glue.
type grpcPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("host: the host side serves nothing")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return solverv1.NewSolverClient(c), nil
}

// minimalEnv is the host environment a plugin inherits.
func minimalEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Name returns the plugin's name from LaunchOptions.
func (p *Plugin) Name() string { return p.name }

// Exited reports whether the plugin process has exited (crashed, or was
// closed). A caller that keeps a plugin for many challenges launches a new
// one when this is true.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Close stops the plugin process: it asks it to exit, and kills it if it has
// not within two seconds. It is safe to call more than once.
func (p *Plugin) Close() error {
	p.closed.Do(func() {
		p.client.Kill()
		p.kill()
	})
	return nil
}

// Info asks the plugin to describe itself.
func (p *Plugin) Info(ctx context.Context, _ *InfoRequest) (*InfoResponse, error) {
	r, err := p.rpc.Info(ctx, &solverv1.InfoRequest{})
	if err != nil {
		return nil, p.wrap(ctx, "info", "", err)
	}
	return &InfoResponse{
		Name:                r.GetName(),
		Version:             r.GetVersion(),
		ChallengeTypes:      r.GetChallengeTypes(),
		IdentifierTypes:     r.GetIdentifierTypes(),
		WaitsForPropagation: r.GetWaitsForPropagation(),
	}, nil
}

// Configure passes the plugin its configuration.
func (p *Plugin) Configure(ctx context.Context, req *ConfigureRequest) (*ConfigureResponse, error) {
	cfg, err := configToProto(req.Config)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: configure: %w", p.name, err)
	}
	if _, err := p.rpc.Configure(ctx, &solverv1.ConfigureRequest{Config: cfg}); err != nil {
		return nil, p.wrap(ctx, "configure", "", err)
	}
	return &ConfigureResponse{}, nil
}

// call runs one challenge call in a call slot, under CallTimeout.
func (p *Plugin) call(ctx context.Context, op string, c sdk.Challenge, f func(ctx context.Context, ch *solverv1.Challenge) error) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("plugin %s: %s %s: waiting for one of its %d call slots (max_calls): %w", p.name, op, c.Identifier.Value, p.maxCalls, ctx.Err())
	}
	defer func() { <-p.slots }()
	if p.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.callTimeout)
		defer cancel()
	}
	if err := f(ctx, challengeToProto(c)); err != nil {
		return p.wrap(ctx, op, c.Identifier.Value, err)
	}
	return nil
}

// Present asks the plugin to make the challenge answerable.
func (p *Plugin) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	err := p.call(ctx, "present", req.Challenge, func(ctx context.Context, ch *solverv1.Challenge) error {
		_, err := p.rpc.Present(ctx, &solverv1.PresentRequest{Challenge: ch})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sdk.PresentResponse{}, nil
}

// Wait asks the plugin to wait until the challenge is visible to the CA. A
// plugin that does not wait answers at once.
func (p *Plugin) Wait(ctx context.Context, req *sdk.WaitRequest) (*sdk.WaitResponse, error) {
	err := p.call(ctx, "wait", req.Challenge, func(ctx context.Context, ch *solverv1.Challenge) error {
		_, err := p.rpc.Wait(ctx, &solverv1.WaitRequest{Challenge: ch})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sdk.WaitResponse{}, nil
}

// CleanUp asks the plugin to undo Present.
func (p *Plugin) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	err := p.call(ctx, "cleanup", req.Challenge, func(ctx context.Context, ch *solverv1.Challenge) error {
		_, err := p.rpc.CleanUp(ctx, &solverv1.CleanUpRequest{Challenge: ch})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sdk.CleanUpResponse{}, nil
}

// wrap turns a gRPC error into "plugin NAME: OP DOMAIN: cause", where cause
// is the context's error if it ended, ErrExited if the process is gone, or
// the plugin's own message, bounded and with secrets redacted.
func (p *Plugin) wrap(ctx context.Context, op, domain string, err error) error {
	prefix := fmt.Sprintf("plugin %s: %s", p.name, op)
	if domain != "" {
		prefix += " " + domain
	}
	st := status.Convert(err)
	msg := p.redact.text(cut(st.Message(), maxErrorText))
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", prefix, ctx.Err())
	case deadlinePassed(ctx):
		// The plugin's side of the deadline (sent as grpc-timeout) can end
		// the stream a moment before ctx's own timer fires.
		return fmt.Errorf("%s: %w", prefix, context.DeadlineExceeded)
	case p.client.Exited() || st.Code() == codes.Unavailable:
		return fmt.Errorf("%s: %w (%s)", prefix, ErrExited, msg)
	default:
		return fmt.Errorf("%s: %s", prefix, msg)
	}
}

func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// cut returns s, or its first n bytes and a note of how many were cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s... (%d more bytes cut)", strings.ToValidUTF8(s[:n], ""), len(s)-n)
}

func challengeToProto(c sdk.Challenge) *solverv1.Challenge {
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
