package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	solverv1 "github.com/acmehook/acmehook/plugin/sdk/internal/proto/acmehook/solver/v1"
)

// Errors of the host side.
var (
	// ErrChecksum is returned by Launch when the plugin binary's SHA-256
	// differs from LaunchOptions.SHA256.
	ErrChecksum = errors.New("sdk: plugin binary checksum mismatch")
	// ErrProtocolVersion is returned by Launch when the plugin speaks
	// another version of the solver protocol than ProtocolVersion.
	ErrProtocolVersion = errors.New("sdk: plugin speaks another solver protocol version")
	// ErrExited is returned by a call when the plugin process has exited
	// (it crashed, or was killed).
	ErrExited = errors.New("sdk: plugin process exited")
)

// DefaultStartTimeout bounds Launch when neither LaunchOptions.StartTimeout
// nor the context sets a shorter limit.
const DefaultStartTimeout = 10 * time.Second

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
	// StartTimeout bounds the start and handshake; zero means
	// DefaultStartTimeout. A sooner ctx deadline wins.
	StartTimeout time.Duration
	// Logger receives the plugin's log lines with attribute plugin=Name;
	// nil discards them.
	Logger *slog.Logger
}

// Plugin is a running plugin process. Its methods may be called
// concurrently. Close MUST be called to stop the process.
type Plugin struct {
	name   string
	client *plugin.Client
	rpc    solverv1.SolverClient
	kill   context.CancelFunc // ends the process's context
	closed sync.Once
}

// Launch starts the plugin at opts.Path, performs go-plugin's handshake
// (protocol version, AutoMTLS) and, if opts.Config is not nil, configures it.
// If ctx ends before the handshake completes, the process is killed and
// Launch returns ctx's error; once launched, the plugin outlives ctx until
// Close. On error nothing is left running.
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
	// The process's own context is cancelled, killing it, when ctx ends
	// during the start (go-plugin's start watches only its timeout) and,
	// for good measure, by Close.
	procCtx, kill := context.WithCancel(context.Background())
	stopWatching := context.AfterFunc(ctx, kill)
	cmd := exec.CommandContext(procCtx, opts.Path)
	cmd.Env = append(minimalEnv(), opts.Env...)
	cmd.Dir = opts.Dir
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("plugin", opts.Name)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          pluginSet(nil),
		Cmd:              cmd,
		SecureConfig:     secure,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     timeout,
		Logger:           newHCLogger(logger, cmd.Path),
		SyncStdout:       &lineWriter{l: logger, stream: "stdout"},
		SyncStderr:       &lineWriter{l: logger, stream: "stderr"},
	})
	rpc, err := client.Client()
	if !stopWatching() {
		// ctx ended during the start and the process was killed.
		client.Kill()
		return nil, ctx.Err()
	}
	if err != nil {
		client.Kill()
		kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, ErrChecksum
		}
		if strings.Contains(err.Error(), "incompatible API version") {
			return nil, fmt.Errorf("%w (acmehook speaks %d; rebuild the plugin with this acmehook's SDK): %v", ErrProtocolVersion, ProtocolVersion, err)
		}
		return nil, err
	}
	raw, err := rpc.Dispense(pluginName)
	if err != nil {
		client.Kill()
		kill()
		return nil, err
	}
	return &Plugin{name: opts.Name, client: client, rpc: raw.(solverv1.SolverClient), kill: kill}, nil
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

// Present asks the plugin to make the challenge answerable.
func (p *Plugin) Present(ctx context.Context, req *PresentRequest) (*PresentResponse, error) {
	if _, err := p.rpc.Present(ctx, &solverv1.PresentRequest{Challenge: challengeToProto(req.Challenge)}); err != nil {
		return nil, p.wrap(ctx, "present", req.Challenge.Identifier.Value, err)
	}
	return &PresentResponse{}, nil
}

// Wait asks the plugin to wait until the challenge is visible to the CA. A
// plugin that does not wait answers at once.
func (p *Plugin) Wait(ctx context.Context, req *WaitRequest) (*WaitResponse, error) {
	if _, err := p.rpc.Wait(ctx, &solverv1.WaitRequest{Challenge: challengeToProto(req.Challenge)}); err != nil {
		return nil, p.wrap(ctx, "wait", req.Challenge.Identifier.Value, err)
	}
	return &WaitResponse{}, nil
}

// CleanUp asks the plugin to undo Present.
func (p *Plugin) CleanUp(ctx context.Context, req *CleanUpRequest) (*CleanUpResponse, error) {
	if _, err := p.rpc.CleanUp(ctx, &solverv1.CleanUpRequest{Challenge: challengeToProto(req.Challenge)}); err != nil {
		return nil, p.wrap(ctx, "cleanup", req.Challenge.Identifier.Value, err)
	}
	return &CleanUpResponse{}, nil
}

// wrap turns a gRPC error into "plugin NAME: OP DOMAIN: cause", where cause
// is the context's error if it ended, ErrExited if the process is gone, or
// the plugin's own message.
func (p *Plugin) wrap(ctx context.Context, op, domain string, err error) error {
	prefix := fmt.Sprintf("plugin %s: %s", p.name, op)
	if domain != "" {
		prefix += " " + domain
	}
	st := status.Convert(err)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", prefix, ctx.Err())
	case deadlinePassed(ctx):
		// The plugin's side of the deadline (sent as grpc-timeout) can end
		// the stream a moment before ctx's own timer fires.
		return fmt.Errorf("%s: %w", prefix, context.DeadlineExceeded)
	case p.client.Exited() || st.Code() == codes.Unavailable:
		return fmt.Errorf("%s: %w (%s)", prefix, ErrExited, st.Message())
	default:
		return fmt.Errorf("%s: %s", prefix, st.Message())
	}
}

func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// lineWriter logs what a plugin prints to its os.Stdout or os.Stderr (which
// go-plugin forwards) at Info, one record per line.
type lineWriter struct {
	l      *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.l.Info(string(w.buf[:i]), "stream", w.stream)
		w.buf = w.buf[i+1:]
	}
	// A line longer than 64 KiB is logged in pieces.
	if len(w.buf) > 64<<10 {
		w.l.Info(string(w.buf), "stream", w.stream)
		w.buf = nil
	}
	return len(b), nil
}
