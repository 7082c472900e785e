package sdk

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/acmehook/acmehook/plugin/internal/wire"
)

// Errors Serve returns.
var (
	// ErrNotLaunched is returned by Serve when the program was not
	// started by acmehook (run by hand, say).
	ErrNotLaunched = errors.New("sdk: not started by acmehook")
	// ErrParentExited is returned by Serve when the process that started
	// the plugin went away without stopping it (acmehook was killed).
	ErrParentExited = errors.New("sdk: the process that started this plugin has exited")
)

// parentPoll is how often Serve checks that its parent is alive.
const parentPoll = 200 * time.Millisecond

// Serve runs a solver plugin until acmehook stops it, then calls the
// solver's Close if it is a [Closer]. It is the whole of a plugin's main.
// It returns nil when acmehook stopped the plugin, [ErrNotLaunched] (with a
// message for the person who ran it) when acmehook did not start it,
// [ErrParentExited] when acmehook died without stopping it (the plugin
// then exits rather than keeping its ports), and an error naming the
// mistake for an invalid description. It never exits the process itself.
func Serve(p Plugin) error {
	if err := p.check(); err != nil {
		return err
	}
	if os.Getenv(wire.Handshake.MagicCookieKey) != wire.Handshake.MagicCookieValue {
		return fmt.Errorf("the %s solver is an acmehook solver plugin: acmehook starts it when a challenge needs solving; "+
			"name its path in acmehook's configuration instead of running it by hand (%w)", p.Name, ErrNotLaunched)
	}
	// The logger writes to the process's real stderr, which the host reads
	// line by line; go-plugin points os.Stderr elsewhere once it serves.
	logger := newLogger(os.Stderr)
	tlsProvider := offeredTLS(logger)
	srv := &server{desc: p, logger: logger}
	parent := os.Getppid()
	done := make(chan struct{})
	go func() {
		defer close(done)
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: wire.Handshake,
			TLSProvider:     tlsProvider,
			Plugins:         plugin.PluginSet{wire.PluginName: &grpcPlugin{srv: srv}},
			GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
				return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(wire.MaxMessageSize), grpc.MaxSendMsgSize(wire.MaxMessageSize))...)
			},
			Logger: hclog.New(&hclog.LoggerOptions{
				Output:     os.Stderr,
				Level:      hclog.Info,
				JSONFormat: true,
			}),
		})
	}()
	var err error
	t := time.NewTicker(parentPoll)
	defer t.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-t.C:
			if os.Getppid() != parent {
				err = fmt.Errorf("%w (pid %d)", ErrParentExited, parent)
				logger.Error("stopping: the process that started the plugin has exited", "parent_pid", parent)
				break wait
			}
		}
	}
	if c, ok := srv.solver().(Closer); ok {
		if cerr := c.Close(); cerr != nil {
			logger.Error("closing solver", "error", cerr)
			err = errors.Join(err, fmt.Errorf("closing solver: %w", cerr))
		}
	}
	return err
}

// check reports what is missing from a description.
func (p Plugin) check() error {
	var missing []string
	if p.Name == "" {
		missing = append(missing, "Name")
	}
	if len(p.ChallengeTypes) == 0 {
		missing = append(missing, "ChallengeTypes")
	}
	if p.New == nil {
		missing = append(missing, "New")
	}
	if len(missing) > 0 {
		return fmt.Errorf("sdk: Plugin %q lacks %s", p.Name, strings.Join(missing, ", "))
	}
	return nil
}

// newLogger returns a logger that writes JSON lines in go-plugin's log
// format to w; the host parses them into its own slog records.
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				// "1.5s" rather than JSON's nanoseconds.
				return slog.String(a.Key, a.Value.Duration().String())
			}
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.Attr{} // the host stamps lines as they arrive
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

// offeredTLS returns a go-plugin TLSProvider serving with the certificate
// and key the host offers on wire.ServerCertFD, trusting only the host's
// PLUGIN_CLIENT_CERT; or nil, for go-plugin's AutoMTLS (a new P-521 key and
// certificate, announced in the handshake line), when the host offers none
// or the offer is unusable. The descriptor is closed and the variable
// removed, so that nothing the plugin starts inherits them.
func offeredTLS(logger *slog.Logger) func() (*tls.Config, error) {
	if os.Getenv(wire.ServerCertEnv) != strconv.Itoa(wire.ServerCertFD) {
		return nil
	}
	os.Unsetenv(wire.ServerCertEnv)
	f := os.NewFile(wire.ServerCertFD, "server certificate")
	if f == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	f.Close()
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.X509KeyPair(b, b)
	}
	clients := x509.NewCertPool()
	if err == nil && !clients.AppendCertsFromPEM([]byte(os.Getenv("PLUGIN_CLIENT_CERT"))) {
		err = errors.New("PLUGIN_CLIENT_CERT holds no certificate")
	}
	if err != nil {
		logger.Debug("not using the host's offered certificate", "error", err)
		return nil
	}
	return func() (*tls.Config, error) {
		return &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clients,
			MinVersion:   tls.VersionTLS12,
		}, nil
	}
}
