// Package luahost runs acmehook's Lua deploy scripts in a sandboxed
// gopher-lua interpreter, in a separate process.
//
// A script subscribes to lifecycle events with acmehook.on and reacts to them
// through the small acmehook module (files, exec, http, json, x509, tls probe,
// log). Every run gets a fresh interpreter, a deadline, a call-stack limit and
// an explicitly built sandbox: base (without dofile, loadfile, load,
// loadstring), table, string, math and a safe os (time, date, clock). There is
// no io, debug, coroutine or package library; require resolves "acmehook" and,
// when Options.LibDir is set, plain Lua modules from that directory.
//
// Scripts cannot take their caller down: the interpreter runs in a script
// host process, the caller's own program re-executed (see ChildMain), under
// an address-space limit, with a minimal environment, and killed if it has
// not answered shortly after the run's deadline. Whatever a script does —
// a pattern that backtracks for hours, a gsub that asks for 16 GiB, a read
// of a FIFO that never ends — Dispatch returns a *ScriptError naming the
// script, the line and the builtin it was in, and the caller goes on. A
// script host serves one run at a time and is reused for later runs only
// after a run it finished cleanly.
//
// The package imports only acmehook's event vocabulary (engine/event): a
// Host is an event.Hook for the scripts of Options.Scripts, and Dispatch
// runs one script for one event.
package luahost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// Defaults used when the corresponding Options field is zero, and fixed
// limits.
const (
	DefaultTimeout       = 2 * time.Minute
	DefaultCallStackSize = 200
	DefaultOutputLimit   = 1 << 20
	DefaultMemoryLimit   = 512 << 20
	// DefaultAddressSpaceLimit is the script host's RLIMIT_AS. About
	// 1.2 GiB of it is address space the Go runtime reserves up front,
	// so a script has somewhat less than 2 GiB of heap before the host
	// runs out of memory.
	DefaultAddressSpaceLimit = 3 << 30
	// MaxScriptSize bounds a script or library module; a larger one is
	// refused before it is compiled.
	MaxScriptSize = 1 << 20
	maxStringRep  = 16 << 20

	// StopGrace is how long after its deadline (or after being canceled)
	// a script host may take to report; then it is killed.
	StopGrace = time.Second
)

var (
	// ErrMemoryLimit is the cause of a run stopped because the heap grew
	// by more than Options.MemoryLimit while it ran, or because the
	// script host ran out of address space.
	ErrMemoryLimit = errors.New("luahost: memory limit exceeded")
	// ErrCrashed is the cause of a run whose script host died for another
	// reason than running out of memory.
	ErrCrashed = errors.New("luahost: script host crashed")
	// ErrNoChildMain is returned by Dispatch in a program that did not
	// call ChildMain at startup.
	ErrNoChildMain = errors.New("luahost: the program does not call luahost.ChildMain at startup, so it cannot run script hosts")
)

// Options configures a Host. The zero value is usable.
type Options struct {
	// Logger receives acmehook.log output and print, with script and
	// event attributes. Nil discards.
	Logger *slog.Logger
	// Scripts are the scripts Handle dispatches each event to, in order.
	Scripts []string
	// Timeout bounds one Dispatch (loading the script and running its
	// handlers), on top of any deadline already on the caller's ctx.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// LibDir, if set, is a directory from which require("name") loads
	// name.lua (dots in name become path separators). Empty disables it.
	LibDir string
	// Dir is the script host's working directory, against which scripts'
	// relative paths (acmehook.files, exec, net) resolve: the
	// configuration file's directory. Empty means acmehook's own.
	Dir string
	// Vars is exposed read-only to scripts as acmehook.vars: per-deployment
	// settings such as the nginx binary or a webhook URL.
	Vars map[string]string
	// CallStackSize limits Lua call depth. Zero means DefaultCallStackSize.
	CallStackSize int
	// MemoryLimit stops a run whose heap growth exceeds it, in bytes,
	// with a script error at the line it was running. gopher-lua has no
	// allocator hook, so this is a guard, not a quota: the script host's
	// heap is sampled every 10 ms, and a single huge operation completes
	// (or exhausts AddressSpaceLimit) before the run is stopped. Zero
	// means DefaultMemoryLimit; negative disables the guard.
	MemoryLimit int64
	// AddressSpaceLimit is the script host's RLIMIT_AS in bytes: what a
	// single huge operation can reach before the host dies and the run
	// ends in ErrMemoryLimit. Programs started by acmehook.exec get the
	// limit acmehook itself has back. Zero means DefaultAddressSpaceLimit;
	// negative leaves the host at acmehook's own limit.
	AddressSpaceLimit int64
	// OutputLimit caps the bytes kept from each of an exec'd program's
	// stdout and stderr, and from an HTTP response body. Zero means
	// DefaultOutputLimit.
	OutputLimit int
}

// Host runs scripts in script host processes. It is safe for concurrent
// use: each concurrent Dispatch has a process of its own. Close stops the
// idle ones.
type Host struct {
	opts Options
	log  *slog.Logger
	pool *pool
}

// New returns a Host with opts, filling in defaults. It starts no process.
func New(opts Options) *Host {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CallStackSize <= 0 {
		opts.CallStackSize = DefaultCallStackSize
	}
	if opts.OutputLimit <= 0 {
		opts.OutputLimit = DefaultOutputLimit
	}
	if opts.MemoryLimit == 0 {
		opts.MemoryLimit = DefaultMemoryLimit
	}
	if opts.AddressSpaceLimit == 0 {
		opts.AddressSpaceLimit = DefaultAddressSpaceLimit
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Host{opts: opts, log: log, pool: &pool{}}
}

// WithScripts returns a Host like h with other Scripts and Timeout (zero:
// DefaultTimeout) that shares h's script host processes: the engine has
// one per certificate. Closing either closes both.
func (h *Host) WithScripts(scripts []string, timeout time.Duration) *Host {
	c := *h
	c.opts.Scripts = scripts
	c.opts.Timeout = timeout
	if timeout <= 0 {
		c.opts.Timeout = DefaultTimeout
	}
	return &c
}

// Close stops the idle script hosts. A Dispatch after Close still works,
// with a process of its own that is not kept.
func (h *Host) Close() error {
	h.pool.close()
	return nil
}

// ScriptError is the error Dispatch returns when a script fails to load, a
// handler raises or returns an error, or the run is stopped by its deadline,
// its memory limit or the death of its script host. The engine inspects it
// with errors.As; for a pre-event (challenge-provision) it is a veto, for a
// post-event the deploy should be retried later. Message and Traceback are
// cut to a few KiB.
type ScriptError struct {
	Script    string     // script path as given to Dispatch
	Line      int        // line in Script, 0 if unknown
	Event     event.Type // event being handled
	Message   string     // Lua error message without the "path:line:" prefix
	Traceback string     // Lua stack traceback, if any
	Err       error      // underlying cause: context.DeadlineExceeded, context.Canceled, ErrMemoryLimit, ErrCrashed, a file error, or nil
}

// Error reads like "scripts/nginx.lua:14: attempt to index a nil value (event issued)".
func (e *ScriptError) Error() string {
	var b strings.Builder
	b.WriteString(e.Script)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": " + e.Message)
	if e.Event != "" {
		b.WriteString(" (event " + string(e.Event) + ")")
	}
	return b.String()
}

// Unwrap returns the underlying cause, if any.
func (e *ScriptError) Unwrap() error { return e.Err }

// Dispatch runs script for ev: in a script host, it loads the script in a
// fresh sandboxed interpreter, runs its top level (which registers handlers
// with acmehook.on) and calls every handler registered for ev.Type in
// order, stopping at the first failure. A script without a handler for
// ev.Type returns nil. Any failure is a *ScriptError: for
// ChallengeProvision it is the script's veto; for the post-events the
// engine records it and retries the deploy later. A run stopped by its
// deadline unwraps to context.DeadlineExceeded, one stopped by the memory
// guard or the address-space limit to ErrMemoryLimit. Dispatch returns by
// the run's deadline (ctx's or Options.Timeout, whichever is earlier) plus
// StopGrace, whatever the script does.
func (h *Host) Dispatch(ctx context.Context, script string, ev event.Event) error {
	if !ev.Type.Valid() {
		return fmt.Errorf("luahost: dispatching %s: unknown event %q", script, ev.Type)
	}
	if !childMainCalled.Load() {
		return fmt.Errorf("dispatching %s: %w", script, ErrNoChildMain)
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return &ScriptError{Script: script, Event: ev.Type, Message: "run canceled before it started", Err: err}
	}
	deadline, _ := ctx.Deadline()
	log := h.log.With("script", script, "event", string(ev.Type))
	req := &runRequest{Script: script, Event: ev, Deadline: deadline.UnixNano()}
	var serr *ScriptError
	for attempt := 0; ; attempt++ {
		p, pooled, err := h.pool.get(h)
		if err != nil {
			return &ScriptError{Script: script, Event: ev.Type, Message: "starting the script host: " + err.Error(), Err: err}
		}
		var reusable bool
		serr, reusable = p.dispatch(ctx, log, req)
		if reusable {
			h.pool.put(p)
		} else {
			p.stop()
		}
		if !pooled || attempt > 0 || serr == nil || !errors.Is(serr.Err, errNotSent) {
			break
		}
	}
	if serr != nil {
		serr.Script, serr.Event = script, ev.Type
		return serr
	}
	return nil
}

// config is what h sends every script host it starts.
func (h *Host) config() *runConfig {
	level := slog.LevelError + 4
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if h.log.Enabled(context.Background(), l) {
			level = l
			break
		}
	}
	return &runConfig{
		LibDir:        h.opts.LibDir,
		Vars:          h.opts.Vars,
		CallStackSize: h.opts.CallStackSize,
		MemoryLimit:   h.opts.MemoryLimit,
		OutputLimit:   h.opts.OutputLimit,
		LogLevel:      level,
	}
}

// pool keeps script hosts that finished a run cleanly, for the next runs.
type pool struct {
	mu     sync.Mutex
	idle   []*proc
	closed bool
}

// Pool bounds: idle script hosts kept, and how long one is kept unused.
const (
	maxIdle     = 4
	idleTimeout = 30 * time.Second
)

// get returns an idle script host (pooled) or a new one.
func (pl *pool) get(h *Host) (p *proc, pooled bool, err error) {
	pl.mu.Lock()
	if n := len(pl.idle); n > 0 {
		p := pl.idle[n-1]
		pl.idle = pl.idle[:n-1]
		pl.mu.Unlock()
		p.idle.Stop()
		return p, true, nil
	}
	pl.mu.Unlock()
	p, err = startProc(h)
	return p, false, err
}

func (pl *pool) put(p *proc) {
	pl.mu.Lock()
	if pl.closed || len(pl.idle) >= maxIdle {
		pl.mu.Unlock()
		p.stop()
		return
	}
	pl.idle = append(pl.idle, p)
	p.idle = time.AfterFunc(idleTimeout, func() { pl.expire(p) })
	pl.mu.Unlock()
}

// expire stops p if it is still idle.
func (pl *pool) expire(p *proc) {
	pl.mu.Lock()
	for i, q := range pl.idle {
		if q == p {
			pl.idle = append(pl.idle[:i], pl.idle[i+1:]...)
			pl.mu.Unlock()
			p.stop()
			return
		}
	}
	pl.mu.Unlock()
}

func (pl *pool) close() {
	pl.mu.Lock()
	idle := pl.idle
	pl.idle, pl.closed = nil, true
	pl.mu.Unlock()
	for _, p := range idle {
		p.idle.Stop()
		p.stop()
	}
}
