package luahost

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The hidden first arguments under which a Host re-executes its own
// program: as a script host, and as the trampoline through which a script
// host starts the programs of acmehook.exec with the address-space limit
// acmehook itself had.
const (
	childArg = "__luahost"
	execArg  = "__luahost-exec"
)

// maxGoStack bounds a script host's goroutine stacks (Go's default is
// 1 GB): deep recursion in the parser or compiler crashes the child early
// instead of after eating a gigabyte.
const maxGoStack = 256 << 20

// childMainCalled records that this program calls ChildMain at startup,
// so that a Host may re-execute it as a script host.
var childMainCalled atomic.Bool

// ChildMain runs this process as a script host (or as the exec trampoline
// of one) when a Host started it so, and then returns the exit code and
// true; otherwise it returns at once with false. Every program that uses a
// Host calls it first thing in main, and test binaries in TestMain, before
// anything else runs:
//
//	if code, ok := luahost.ChildMain(); ok {
//		os.Exit(code)
//	}
//
// A Host refuses to run scripts in a program that never called it.
func ChildMain() (code int, ok bool) {
	if len(os.Args) >= 2 {
		switch os.Args[1] {
		case childArg:
			return serveChild(os.Args[2:], os.Stdin, os.Stdout), true
		case execArg:
			return execTrampoline(os.Args[2:]), true
		}
	}
	childMainCalled.Store(true)
	return 0, false
}

// serveChild is a script host's main loop. args: the address-space limit
// in bytes (0: none). It reads a runConfig, then run requests, until its
// stdin closes.
func serveChild(args []string, in io.Reader, out io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "luahost: this is acmehook's internal script host; it is started by acmehook itself")
		return 2
	}
	limit, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "luahost: bad address-space limit:", err)
		return 2
	}
	execLimit, err := limitAddressSpace(limit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "luahost: limiting address space:", err)
		return 2
	}
	debug.SetMaxStack(maxGoStack)
	tr := &tracker{page: mapPositionPage()}

	dec := json.NewDecoder(bufio.NewReader(in))
	var cfg runConfig
	if err := dec.Decode(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "luahost: reading configuration:", err)
		return 2
	}
	w := &wireWriter{enc: json.NewEncoder(out)}
	reqs := make(chan *runRequest)
	cancels := make(chan struct{}, 1)
	eof := make(chan struct{})
	go func() {
		defer close(eof)
		defer close(reqs)
		for {
			var msg toChild
			if err := dec.Decode(&msg); err != nil {
				return
			}
			switch {
			case msg.Run != nil:
				reqs <- msg.Run
			case msg.Cancel:
				select {
				case cancels <- struct{}{}:
				default:
				}
			}
		}
	}()
	httpClient := &http.Client{}
	for req := range reqs {
		ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, req.Deadline))
		done := make(chan struct{})
		go func() {
			select {
			case <-cancels:
				cancel()
			case <-eof:
				cancel()
			case <-done:
			}
		}()
		m := &module{
			cfg:       &cfg,
			log:       slog.New(&forwardHandler{w: w, level: cfg.LogLevel}),
			tr:        tr,
			http:      httpClient,
			execLimit: execLimit,
		}
		serr := m.run(ctx, req.Script, req.Event)
		close(done)
		cancel()
		tr.reset()
		if err := w.send(fromChild{Done: &runDone{Error: toWire(serr)}}); err != nil {
			return 1
		}
	}
	return 0
}

// wireWriter sends lines to the Host; each value is one write.
type wireWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *wireWriter) send(v fromChild) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(v)
}

// Bounds on text that leaves a script: an error's message and traceback,
// and a log record's message and each of its string values.
const (
	maxErrorText = 4 << 10
	maxLogText   = 16 << 10
	maxLogRecord = 256 << 10 // all of one record's fields together
)

// bound cuts s to at most n bytes (on a UTF-8 boundary) and says so.
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut > n-4 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "… (cut: " + strconv.Itoa(len(s)) + " bytes in all)"
}

func toWire(e *ScriptError) *wireError {
	if e == nil {
		return nil
	}
	w := &wireError{Line: e.Line, Message: bound(e.Message, maxErrorText), Traceback: bound(e.Traceback, maxErrorText)}
	switch err := e.Err; {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		w.Cause = causeDeadline
	case errors.Is(err, context.Canceled):
		w.Cause = causeCanceled
	case errors.Is(err, ErrMemoryLimit):
		w.Cause = causeMemory
	case errors.Is(err, fs.ErrNotExist):
		w.Cause, w.Detail = causeNotExist, err.Error()
	case errors.Is(err, fs.ErrPermission):
		w.Cause, w.Detail = causePermission, err.Error()
	default:
		w.Cause, w.Detail = causeFile, err.Error()
	}
	return w
}

// forwardHandler is the script host's slog.Handler: it sends records to
// the Host, which logs them with its own logger.
type forwardHandler struct {
	w     *wireWriter
	level slog.Level
	attrs []slog.Attr
}

func (h *forwardHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *forwardHandler) Handle(_ context.Context, r slog.Record) error {
	rec := &logRecord{Level: r.Level, Msg: bound(r.Message, maxLogText)}
	size, dropped := len(rec.Msg), 0
	add := func(a slog.Attr) bool {
		if size > maxLogRecord {
			dropped++
			return true
		}
		v := a.Value.Resolve()
		var kind string
		var val any
		switch v.Kind() {
		case slog.KindInt64:
			kind, val = "i", v.Int64()
		case slog.KindFloat64:
			kind, val = "f", v.Float64()
		case slog.KindBool:
			kind, val = "b", v.Bool()
		default:
			kind, val = "s", bound(v.String(), maxLogText)
		}
		b, err := json.Marshal(val)
		if err != nil {
			return true
		}
		rec.Attrs = append(rec.Attrs, logAttr{Key: a.Key, Kind: kind, Value: b})
		size += len(a.Key) + len(b)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if dropped > 0 {
		b, _ := json.Marshal(strconv.Itoa(dropped) + " more fields cut")
		rec.Attrs = append(rec.Attrs, logAttr{Key: "cut", Kind: "s", Value: b})
	}
	return h.w.send(fromChild{Log: rec})
}

func (h *forwardHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *forwardHandler) WithGroup(string) slog.Handler { return h }

// slogAttrs turns forwarded attributes back into slog attributes.
func slogAttrs(as []logAttr) []slog.Attr {
	out := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		switch a.Kind {
		case "i":
			var v int64
			if json.Unmarshal(a.Value, &v) == nil {
				out = append(out, slog.Int64(a.Key, v))
			}
		case "f":
			var v float64
			if json.Unmarshal(a.Value, &v) == nil {
				out = append(out, slog.Float64(a.Key, v))
			}
		case "b":
			var v bool
			if json.Unmarshal(a.Value, &v) == nil {
				out = append(out, slog.Bool(a.Key, v))
			}
		default:
			var v string
			if json.Unmarshal(a.Value, &v) == nil {
				out = append(out, slog.String(a.Key, v))
			}
		}
	}
	return out
}
