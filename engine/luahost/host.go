// Package luahost runs acmehook's Lua deploy scripts in a sandboxed
// gopher-lua interpreter.
//
// A script subscribes to lifecycle events with acmehook.on and reacts to them
// through the small acmehook module (files, exec, http, json, x509, tls probe,
// log). Every run gets a fresh interpreter, a deadline, a call-stack limit and
// an explicitly built sandbox: base (without dofile, loadfile, load,
// loadstring), table, string, math and a safe os (time, date, clock). There is
// no io, debug, coroutine or package library; require resolves "acmehook" and,
// when Options.LibDir is set, plain Lua modules from that directory.
//
// The package imports only acmehook's event vocabulary (engine/event): a
// Host is an event.Hook for the scripts of Options.Scripts, and Dispatch
// runs one script for one event.
package luahost

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/acmehook/acmehook/engine/event"
)

// Defaults used when the corresponding Options field is zero.
const (
	DefaultTimeout       = 2 * time.Minute
	DefaultCallStackSize = 200
	DefaultOutputLimit   = 1 << 20
	DefaultMemoryLimit   = 512 << 20
	maxScriptSize        = 1 << 20
	maxStringRep         = 16 << 20

	// The value stack ("registry") grows in large steps up to a fixed
	// size: gopher-lua's default step of 32 slots makes a huge unpack()
	// copy the stack thousands of times, for seconds past the deadline.
	registryMaxSize   = 256 << 10 // slots of 16 bytes: 4 MiB
	registryGrowStep  = 4 << 10
	memoryPollPeriod  = 10 * time.Millisecond
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
)

// ErrMemoryLimit is the cause of a run stopped because the heap grew by
// more than Options.MemoryLimit while it ran.
var ErrMemoryLimit = errors.New("luahost: memory limit exceeded")

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
	// Vars is exposed read-only to scripts as acmehook.vars: per-deployment
	// settings such as the nginx binary or a webhook URL.
	Vars map[string]string
	// CallStackSize limits Lua call depth. Zero means DefaultCallStackSize.
	CallStackSize int
	// MemoryLimit stops a run whose heap growth exceeds it, in bytes.
	// gopher-lua has no allocator hook, so this is a guard, not a quota:
	// the process's Go heap is sampled every 10 ms, growth is measured
	// from the start of the run and includes garbage not yet collected
	// and concurrent runs, and a single huge operation (s .. s) completes
	// before the run is stopped. Zero means DefaultMemoryLimit; negative
	// disables the guard.
	MemoryLimit int64
	// OutputLimit caps the bytes kept from each of an exec'd program's
	// stdout and stderr, and from an HTTP response body. Zero means
	// DefaultOutputLimit.
	OutputLimit int
	// HTTPClient is used by acmehook.http.request. Nil means a client with
	// the default transport; every request runs under the run's deadline.
	HTTPClient *http.Client
	// RootCAs verifies certificates reported by acmehook.tls.probe. Nil
	// means the system roots.
	RootCAs *x509.CertPool
}

// Host runs scripts. It holds no interpreter state between runs and is safe
// for concurrent use.
type Host struct {
	opts Options
	log  *slog.Logger
}

// New returns a Host with opts, filling in defaults.
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
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Host{opts: opts, log: log}
}

// ScriptError is the error Dispatch returns when a script fails to load, a
// handler raises or returns an error, or the run is stopped by its deadline.
// The engine inspects it with errors.As; for a pre-event
// (challenge-provision) it is a veto, for a post-event the deploy should be
// retried later.
type ScriptError struct {
	Script    string     // script path as given to Dispatch
	Line      int        // line in Script, 0 if unknown
	Event     event.Type // event being handled
	Message   string     // Lua error message without the "path:line:" prefix
	Traceback string     // Lua stack traceback, if any
	Err       error      // underlying cause: context.DeadlineExceeded, context.Canceled, ErrMemoryLimit, a file error, or nil
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

// Dispatch runs script for ev: it loads the script in a fresh sandboxed
// interpreter, runs its top level (which registers handlers with
// acmehook.on) and calls every handler registered for ev.Type in order,
// stopping at the first failure. A script without a handler for ev.Type
// returns nil. Any failure is a *ScriptError: for ChallengeProvision it is
// the script's veto; for the post-events the engine records it and retries
// the deploy later. A run stopped by its deadline unwraps to
// context.DeadlineExceeded, one stopped by the memory guard to
// ErrMemoryLimit.
func (h *Host) Dispatch(ctx context.Context, script string, ev event.Event) error {
	if !ev.Type.Valid() {
		return fmt.Errorf("luahost: dispatching %s: unknown event %q", script, ev.Type)
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if h.opts.MemoryLimit > 0 {
		defer watchMemory(h.opts.MemoryLimit, stop)()
	}

	src, err := readScript(script)
	if err != nil {
		return &ScriptError{Script: script, Event: ev.Type, Message: err.Error(), Err: err}
	}

	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       h.opts.CallStackSize,
		RegistrySize:        1024,
		RegistryMaxSize:     registryMaxSize,
		RegistryGrowStep:    registryGrowStep,
		MinimizeStackMemory: true,
	})
	defer L.Close()
	m := &module{host: h, script: script, event: ev.Type, handlers: map[event.Type][]*lua.LFunction{}}
	m.log = h.log.With("script", script, "event", string(ev.Type))
	m.openSandbox(L)
	L.SetContext(ctx)

	fn, err := L.Load(bytes.NewReader(src), script)
	if err != nil {
		return syntaxError(script, ev.Type, err)
	}
	L.Push(fn)
	if err := L.PCall(0, 0, nil); err != nil {
		return runError(ctx, script, ev.Type, err)
	}

	handlers := m.handlers[ev.Type]
	if len(handlers) == 0 {
		h.log.Debug("script has no handler for event", "script", script, "event", string(ev.Type))
		return nil
	}
	table := eventTable(L, ev)
	for _, fn := range handlers {
		top := L.GetTop()
		L.Push(fn)
		L.Push(table)
		if err := L.PCall(1, 2, nil); err != nil {
			return runError(ctx, script, ev.Type, err)
		}
		ok, msg := L.Get(top+1), L.Get(top+2)
		L.SetTop(top)
		if ok == lua.LFalse || (ok == lua.LNil && msg != lua.LNil) {
			return &ScriptError{
				Script:  script,
				Line:    fn.Proto.LineDefined,
				Event:   ev.Type,
				Message: "handler returned error: " + handlerMessage(msg),
				Err:     runCause(ctx),
			}
		}
	}
	return nil
}

func readScript(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading script: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxScriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading script: %w", err)
	}
	if len(b) > maxScriptSize {
		return nil, fmt.Errorf("reading script %s: larger than %d bytes", path, maxScriptSize)
	}
	return b, nil
}

var (
	syntaxPos = regexp.MustCompile(`^(.*) line:(\d+)\(column:\d+\) (?s:(.*))$`)
	runPos    = regexp.MustCompile(`^(.*?):(\d+): (?s:(.*))$`)
)

func syntaxError(script string, ev event.Type, err error) *ScriptError {
	e := &ScriptError{Script: script, Event: ev, Message: strings.TrimSpace(err.Error())}
	var api *lua.ApiError
	if errors.As(err, &api) && api.Cause != nil {
		msg := strings.TrimSpace(api.Cause.Error())
		if m := syntaxPos.FindStringSubmatch(msg); m != nil && m[1] == script {
			e.Line, _ = strconv.Atoi(m[2])
			msg = strings.Join(strings.Fields(m[3]), " ")
		}
		e.Message = msg
	}
	return e
}

func runError(ctx context.Context, script string, ev event.Type, err error) *ScriptError {
	e := &ScriptError{Script: script, Event: ev, Message: err.Error()}
	var api *lua.ApiError
	if errors.As(err, &api) {
		e.Message = lua.LVAsString(api.Object)
		if api.Object.Type() != lua.LTString {
			e.Message = api.Object.String()
		}
		e.Traceback = api.StackTrace
	}
	if m := runPos.FindStringSubmatch(e.Message); m != nil && m[1] == script {
		e.Line, _ = strconv.Atoi(m[2])
		e.Message = m[3]
	} else {
		e.Line = lineFromTraceback(e.Traceback, script)
	}
	if strings.Contains(e.Message, "callstack overflow") {
		e.Message = "stack overflow: call depth exceeds the limit (runaway recursion?)"
	}
	if strings.Contains(e.Message, "registry overflow") {
		e.Message = "value stack overflow: too many values at once (huge unpack or argument list?)"
	}
	if cerr := runCause(ctx); cerr != nil {
		e.Err = cerr
		// gopher-lua reports a stop as the bare context error.
		detail := ": " + e.Message
		if e.Message == context.Canceled.Error() || e.Message == context.DeadlineExceeded.Error() {
			detail = ""
		}
		switch {
		case errors.Is(cerr, context.DeadlineExceeded):
			e.Message = "run stopped at its deadline (endless loop?)" + detail
		case errors.Is(cerr, ErrMemoryLimit):
			e.Message = "run stopped: the heap grew past the memory limit (unbounded table or string?)" + detail
		default:
			e.Message = "run canceled" + detail
		}
	}
	return e
}

// runCause returns why ctx is done (ErrMemoryLimit, DeadlineExceeded,
// Canceled), or nil.
func runCause(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return context.Cause(ctx)
}

// watchMemory samples the heap every memoryPollPeriod and calls stop with
// ErrMemoryLimit once it has grown by more than limit bytes. The returned
// function ends the watch.
func watchMemory(limit int64, stop context.CancelCauseFunc) (end func()) {
	sample := []metrics.Sample{{Name: heapObjectsMetric}}
	heap := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	base := heap()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(memoryPollPeriod)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if heap()-base > limit {
					stop(ErrMemoryLimit)
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// lineFromTraceback finds the innermost frame of script in a gopher-lua
// traceback (lines like "\tscripts/x.lua:12: in function ...").
func lineFromTraceback(tb, script string) int {
	for _, line := range strings.Split(tb, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), script+":")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ":")
		if v, err := strconv.Atoi(n); err == nil {
			return v
		}
	}
	return 0
}

// openSandbox opens the allowed libraries one by one and installs require,
// print and the acmehook module loader.
func (m *module) openSandbox(L *lua.LState) {
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.OsLibName, lua.OpenOs},
	} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	for _, name := range []string{"dofile", "loadfile", "load", "loadstring", "module", "_printregs", "getfenv", "setfenv"} {
		L.SetGlobal(name, lua.LNil)
	}

	// os: only time, date and clock survive.
	full := L.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := L.NewTable()
	for _, name := range []string{"time", "date", "clock"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	L.SetGlobal(lua.OsLibName, safe)

	// string.rep is the one library function that allocates without bound
	// in a single Go call, out of reach of the deadline.
	str := L.GetGlobal(lua.StringLibName).(*lua.LTable)
	rep := str.RawGetString("rep").(*lua.LFunction)
	str.RawSetString("rep", L.NewFunction(func(L *lua.LState) int {
		s := L.CheckString(1)
		n := L.CheckInt(2)
		if n > 0 && len(s) > 0 && n > maxStringRep/len(s) {
			L.RaiseError("string.rep: result larger than %d bytes", maxStringRep)
		}
		L.Push(rep)
		L.Push(lua.LString(s))
		L.Push(lua.LNumber(n))
		L.Call(2, 1)
		return 1
	}))

	// The registry's _LOADED table, filled by the library openers, is only
	// reachable from Go; require below keeps its own cache.
	loaded := map[string]lua.LValue{}
	L.SetGlobal("require", L.NewFunction(func(L *lua.LState) int {
		name := L.CheckString(1)
		if v, ok := loaded[name]; ok {
			L.Push(v)
			return 1
		}
		v := m.require(L, name)
		loaded[name] = v
		L.Push(v)
		return 1
	}))
	L.SetGlobal("print", L.NewFunction(m.print))
}

var modName = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`)

// require resolves name to the acmehook module or a library file; an
// unknown name raises.
func (m *module) require(L *lua.LState, name string) lua.LValue {
	if name == "acmehook" {
		return m.table(L)
	}
	dir := m.host.opts.LibDir
	if dir == "" || !modName.MatchString(name) {
		L.RaiseError("module %q not found: only \"acmehook\" can be required", name)
	}
	path := filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(name, ".", "/"))+".lua")
	src, err := readScript(path)
	if err != nil {
		L.RaiseError("module %q not found: %v", name, err)
	}
	fn, err := L.Load(bytes.NewReader(src), path)
	if err != nil {
		L.RaiseError("loading module %q: %v", name, err)
	}
	L.Push(fn)
	L.Push(lua.LString(name))
	L.Call(1, 1)
	v := L.Get(-1)
	L.Pop(1)
	if v == lua.LNil {
		v = lua.LTrue
	}
	return v
}

func handlerMessage(v lua.LValue) string {
	switch v.Type() {
	case lua.LTNil:
		return "false"
	case lua.LTString, lua.LTNumber:
		return lua.LVAsString(v)
	}
	return v.String()
}
