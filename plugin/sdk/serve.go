package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// logger writes JSON lines in go-plugin's log format to stderr, which the
// host reads and forwards into its own slog logger. It is created once and
// never changed.
var logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
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

// Logger returns the plugin's logger. What a plugin logs through it appears
// in acmehook's log, attributed to the plugin, at the same level. Never log
// key authorizations or private keys above Debug.
func Logger() *slog.Logger { return logger }

// Serve runs a solver plugin until acmehook stops it, then calls the
// solver's Close if it is a Closer. It is the whole of a plugin's main. Run by
// hand rather than by acmehook, it says so on stderr and exits with status 1.
func Serve(s Solver) {
	if os.Getenv(handshake.MagicCookieKey) != handshake.MagicCookieValue {
		name := "this program"
		if info, err := s.Info(context.Background(), &InfoRequest{}); err == nil && info.Name != "" {
			name = "the " + info.Name + " solver"
		}
		fmt.Fprintf(os.Stderr, "%s is an acmehook solver plugin: acmehook starts it when a challenge needs solving.\n"+
			"Name its path in acmehook's configuration instead of running it by hand.\n", name)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         pluginSet(s),
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Output:     os.Stderr,
			Level:      hclog.Info,
			JSONFormat: true,
		}),
	})
	if c, ok := s.(Closer); ok {
		if err := c.Close(); err != nil {
			logger.Error("closing solver", "error", err)
		}
	}
}
