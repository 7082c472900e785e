package host

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// Bounds on what a plugin's output costs the host.
const (
	// logBufferSize is the buffer go-plugin reads the plugin's stderr log
	// lines with; a longer line arrives in pieces of this size.
	logBufferSize = 64 << 10
	// maxLogText bounds a message or attribute value the host logs for a
	// plugin; the rest is cut with a note.
	maxLogText = 8 << 10
)

// redactor replaces known secret values in a plugin's text. A nil
// redactor changes nothing.
type redactor struct{ r *strings.Replacer }

// minSecret is the shortest value redacted: shorter ones would blank out
// ordinary text.
const minSecret = 4

func newRedactor(secrets []string) *redactor {
	var pairs []string
	// Longest first, so that a secret containing another is replaced whole.
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range slices.Compact(secrets) {
		if len(s) >= minSecret {
			pairs = append(pairs, s, "[redacted]")
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	return &redactor{r: strings.NewReplacer(pairs...)}
}

func (r *redactor) text(s string) string {
	if r == nil {
		return s
	}
	return r.r.Replace(s)
}

// lineWriter logs what a plugin prints to its os.Stdout or os.Stderr (which
// go-plugin forwards) at Info, one record per line. A line longer than
// maxLogText is logged cut, with the number of bytes dropped, once its end
// arrives; memory stays bounded whatever the plugin prints.
type lineWriter struct {
	l       *slog.Logger
	stream  string
	redact  *redactor
	mu      sync.Mutex
	buf     []byte
	dropped int
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
		}
		room := maxLogText - len(w.buf)
		if len(chunk) <= room {
			w.buf = append(w.buf, chunk...)
		} else {
			w.buf = append(w.buf, chunk[:max(room, 0)]...)
			w.dropped += len(chunk) - max(room, 0)
		}
		if i < 0 {
			break
		}
		w.flush()
		b = b[i+1:]
	}
	return n, nil
}

// flush logs the line collected so far.
func (w *lineWriter) flush() {
	msg := w.redact.text(strings.ToValidUTF8(string(w.buf), ""))
	if w.dropped > 0 {
		w.l.Info(msg, "stream", w.stream, "cut_bytes", w.dropped)
	} else {
		w.l.Info(msg, "stream", w.stream)
	}
	w.buf, w.dropped = w.buf[:0], 0
}
