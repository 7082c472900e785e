package host

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// levelTrace is the slog level of hclog's Trace, below Debug.
const levelTrace = slog.LevelDebug - 4

// hclogAdapter is the hclog.Logger go-plugin logs to, forwarding into a
// slog.Logger that already carries plugin=<name>. It receives go-plugin's
// own messages and, through a logger go-plugin names after the executable,
// every line the plugin writes to its stderr (the SDK's log records), which
// go-plugin has parsed from hclog's JSON format and appended a "timestamp"
// to. Records are stamped by slog when they arrive; the adapter drops that
// timestamp, renames go-plugin's own plugin=<path> to path=<path> so that a
// record has one plugin attribute, and maps hclog's levels to slog's.
//
// Whatever the plugin writes costs the host a bounded amount: go-plugin
// reads its stderr in pieces of logBufferSize, a line longer than that is
// logged once, cut to maxLogText, and its further pieces are dropped;
// messages and string values are cut to maxLogText and known secrets
// redacted.
type hclogAdapter struct {
	l       *slog.Logger
	path    string      // the executable, as go-plugin names it
	relay   *relayState // for the logger go-plugin relays the plugin's stderr through
	redact  *redactor
	implied []any
}

// relayState follows a plugin log line that go-plugin passes on in
// pieces: a piece of exactly logBufferSize bytes, logged at Debug without
// attributes, is followed by more of the same line, the last one shorter.
type relayState struct {
	mu   sync.Mutex
	cont bool // within a long line, after its first piece
}

// piece reports whether the record is a further piece of a long line
// (drop it) or the first one (log it cut, saying so).
func (s *relayState) piece(level hclog.Level, msg string, nargs int) (drop, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cont {
		s.cont = len(msg) == logBufferSize
		return true, false
	}
	s.cont = level == hclog.Debug && nargs == 0 && len(msg) == logBufferSize
	return false, s.cont
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLogger(l *slog.Logger, path string, redact *redactor) hclog.Logger {
	return &hclogAdapter{l: l, path: path, redact: redact}
}

// slogLevel maps an hclog level to slog's; a line without a level is Info.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Log emits one record; args are key/value pairs as in hclog.
func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	first := false
	if a.relay != nil {
		var drop bool
		if drop, first = a.relay.piece(level, msg, len(args)); drop {
			return
		}
	}
	if first {
		msg = strings.ToValidUTF8(msg[:maxLogText], "") + fmt.Sprintf("... (a line longer than %d KiB, cut)", logBufferSize>>10)
	} else {
		msg = cut(msg, maxLogText)
	}
	lvl := slogLevel(level)
	ctx := context.Background()
	if !a.l.Enabled(ctx, lvl) {
		return
	}
	kv := append(append([]any{}, a.implied...), args...)
	if a.relay != nil && len(kv) >= 2 && len(kv)%2 == 0 && kv[len(kv)-2] == "timestamp" {
		kv = kv[:len(kv)-2] // go-plugin's copy of the line's own (absent) time
	}
	attrs := make([]slog.Attr, 0, len(kv)/2+1)
	for i := 0; i < len(kv); i += 2 {
		if i+1 == len(kv) {
			attrs = append(attrs, slog.Any("!BADKEY", kv[i]))
			break
		}
		key, ok := kv[i].(string)
		if !ok {
			attrs = append(attrs, slog.Any("!BADKEY", kv[i]), slog.Any("!BADKEY", kv[i+1]))
			continue
		}
		v := kv[i+1]
		if key == "plugin" && v == a.path {
			key = "path"
		}
		if s, ok := v.(string); ok {
			v = a.redact.text(cut(s, maxLogText))
		}
		attrs = append(attrs, slog.Any(key, jsonNumber(v)))
	}
	a.l.LogAttrs(ctx, lvl, a.redact.text(msg), attrs...)
}

// jsonNumber turns a whole float64, which is how go-plugin decodes every
// JSON number of the plugin's log lines, back into an int64.
func jsonNumber(v any) any {
	if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return v
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(level hclog.Level) bool {
	return a.l.Enabled(context.Background(), slogLevel(level))
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

// GetLevel returns the lowest level the slog handler records; go-plugin
// skips parsing the plugin's lines below it.
func (a *hclogAdapter) GetLevel() hclog.Level {
	for _, level := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.enabled(level) {
			return level
		}
	}
	return hclog.Off
}

// SetLevel does nothing: the slog handler decides what is recorded.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	b := *a
	b.implied = append(append([]any{}, a.implied...), args...)
	return &b
}

// Name is empty: the slog logger's plugin attribute names the plugin.
func (a *hclogAdapter) Name() string { return "" }

// Named returns the logger go-plugin relays the plugin's stderr through.
func (a *hclogAdapter) Named(string) hclog.Logger {
	b := *a
	b.relay = &relayState{}
	return &b
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger { return a.Named(name) }

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each write, a line from a
// log.Logger, at opts.ForceLevel or Info.
func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := levelWriter{a: a, level: hclog.Info}
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		w.level = opts.ForceLevel
	}
	return w
}

type levelWriter struct {
	a     *hclogAdapter
	level hclog.Level
}

func (w levelWriter) Write(b []byte) (int, error) {
	w.a.Log(w.level, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
