package host

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestHCLogAdapter checks each record the adapter writes, as a slog text
// handler prints it (without its time).
func TestHCLogAdapter(t *testing.T) {
	tests := []struct {
		name string
		log  func(hclog.Logger)
		want string // "" when nothing is logged
	}{
		{"trace", func(l hclog.Logger) { l.Trace("t", "k", "v") }, `level=DEBUG-4 msg=t plugin=p k=v`},
		{"debug", func(l hclog.Logger) { l.Debug("d") }, `level=DEBUG msg=d plugin=p`},
		{"info", func(l hclog.Logger) { l.Info("i") }, `level=INFO msg=i plugin=p`},
		{"warn", func(l hclog.Logger) { l.Warn("w") }, `level=WARN msg=w plugin=p`},
		{"error", func(l hclog.Logger) { l.Error("e") }, `level=ERROR msg=e plugin=p`},
		{"no level", func(l hclog.Logger) { l.Log(hclog.NoLevel, "n") }, `level=INFO msg=n plugin=p`},
		{"off", func(l hclog.Logger) { l.Log(hclog.Off, "o") }, ""},
		{"go-plugin's plugin attribute", func(l hclog.Logger) { l.Info("exited", "plugin", "/bin/p", "id", 7) },
			`level=INFO msg=exited plugin=p path=/bin/p id=7`},
		{"relayed line's timestamp", func(l hclog.Logger) {
			l.Named("p").Info("line", "n", float64(3), "f", 1.5, "timestamp", "0001-01-01T00:00:00.000Z")
		}, `level=INFO msg=line plugin=p n=3 f=1.5`},
		{"timestamp not last", func(l hclog.Logger) { l.Named("p").Info("line", "timestamp", "x", "k", "v") },
			`level=INFO msg=line plugin=p timestamp=x k=v`},
		{"with", func(l hclog.Logger) { l.With("a", 1).Info("w", "b", 2) }, `level=INFO msg=w plugin=p a=1 b=2`},
		{"odd arguments", func(l hclog.Logger) { l.Info("odd", "k") }, `level=INFO msg=odd plugin=p !BADKEY=k`},
		{"standard logger", func(l hclog.Logger) {
			l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}).Print("std")
		}, `level=WARN msg=std plugin=p`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: levelTrace, ReplaceAttr: func(g []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey && len(g) == 0 {
					return slog.Attr{}
				}
				return a
			}})
			tt.log(newHCLogger(slog.New(h).With("plugin", "p"), "/bin/p", nil))
			if got := strings.TrimSpace(buf.String()); got != tt.want {
				t.Errorf("logged %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHCLogAdapterLevel(t *testing.T) {
	for _, tt := range []struct {
		level slog.Level
		want  hclog.Level
	}{
		{levelTrace, hclog.Trace}, {slog.LevelDebug, hclog.Debug}, {slog.LevelInfo, hclog.Info},
		{slog.LevelWarn, hclog.Warn}, {slog.LevelError, hclog.Error}, {slog.LevelError + 1, hclog.Off},
	} {
		l := newHCLogger(slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: tt.level})), "/bin/p", nil)
		if got := l.GetLevel(); got != tt.want {
			t.Errorf("GetLevel() with a handler at %v = %v, want %v", tt.level, got, tt.want)
		}
	}
}
