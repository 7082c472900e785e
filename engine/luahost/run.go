package luahost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// This file is the script host process's side: one run of one script in a
// fresh interpreter. Everything here runs in the child; a stuck or
// exploding builtin can only take the child down.

const (
	// The value stack ("registry") grows in large steps up to a fixed
	// size: gopher-lua's default step of 32 slots makes a huge unpack()
	// copy the stack thousands of times, for seconds past the deadline.
	registryMaxSize   = 256 << 10 // slots of 16 bytes: 4 MiB
	registryGrowStep  = 4 << 10
	memoryPollPeriod  = 10 * time.Millisecond
	heapObjectsMetric = "/memory/classes/heap/objects:bytes"
)

// run dispatches ev to script in a fresh sandboxed interpreter (see
// Host.Dispatch) and returns nil or the script's failure. m carries the
// script host's dependencies; run fills in the rest.
func (m *module) run(ctx context.Context, script string, ev event.Event) *ScriptError {
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if m.cfg.MemoryLimit > 0 {
		defer watchMemory(m.cfg.MemoryLimit, stop)()
	}
	m.script, m.event, m.handlers = script, ev.Type, map[event.Type][]*lua.LFunction{}
	log, tr := m.log, m.tr

	src, err := readScript(script)
	if err != nil {
		return &ScriptError{Script: script, Event: ev.Type, Message: err.Error(), Err: err}
	}
	if line, err := checkNesting(src); err != nil {
		return &ScriptError{Script: script, Line: line, Event: ev.Type, Message: "syntax error: " + err.Error()}
	}

	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       m.cfg.CallStackSize,
		RegistrySize:        1024,
		RegistryMaxSize:     registryMaxSize,
		RegistryGrowStep:    registryGrowStep,
		MinimizeStackMemory: true,
	})
	defer L.Close()
	m.openSandbox(L)
	L.SetContext(ctx)

	tr.enter("compiling", script, 0)
	fn, err := L.Load(bytes.NewReader(src), script)
	tr.leave()
	if err != nil {
		return syntaxError(script, ev.Type, err)
	}
	L.Push(fn)
	if err := L.PCall(0, 0, nil); err != nil {
		return runError(ctx, script, ev.Type, err)
	}

	handlers := m.handlers[ev.Type]
	if len(handlers) == 0 {
		log.Debug("script has no handler for event")
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

// readScript reads a script or library module, refusing one larger than
// MaxScriptSize. It runs in the script host, so a path that blocks (a
// FIFO) only holds the child until its deadline.
func readScript(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading script: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxScriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading script: %w", err)
	}
	if len(b) > MaxScriptSize {
		return nil, fmt.Errorf("reading script: larger than the limit of %d bytes", MaxScriptSize)
	}
	return b, nil
}

// maxNesting bounds how deeply brackets and blocks nest in a script, as
// C Lua's LUAI_MAXCCALLS does: gopher-lua's parser and compiler recurse
// once per level and need about a kilobyte of stack each, so a megabyte of
// "{{{{" would take a gigabyte to compile.
const maxNesting = 200

// checkNesting scans src for brackets ((, [, {) and blocks (do, if,
// function, repeat ... end, until) nested deeper than maxNesting, skipping
// strings and comments, and returns the line where the limit is crossed.
// Other syntax errors are left to the parser.
func checkNesting(src []byte) (line int, err error) {
	line = 1
	depth := 0
	open := func() error {
		depth++
		if depth > maxNesting {
			return fmt.Errorf("brackets and blocks nested more than %d deep", maxNesting)
		}
		return nil
	}
	// longBracket reports the level of a long bracket "[==[" at i, or -1.
	longBracket := func(i int) int {
		j := i + 1
		for j < len(src) && src[j] == '=' {
			j++
		}
		if j < len(src) && src[j] == '[' {
			return j - i - 1
		}
		return -1
	}
	// skipLong skips a long string or comment of level lvl whose opening
	// bracket ends before i, returning the index after its closing bracket.
	skipLong := func(i, lvl int) int {
		closing := "]" + strings.Repeat("=", lvl) + "]"
		for ; i < len(src); i++ {
			if src[i] == '\n' {
				line++
			}
			if src[i] == ']' && bytes.HasPrefix(src[i:], []byte(closing)) {
				return i + len(closing)
			}
		}
		return i
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			i += 2
			if i < len(src) && src[i] == '[' {
				if lvl := longBracket(i); lvl >= 0 {
					i = skipLong(i+lvl+2, lvl)
					continue
				}
			}
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			for i++; i < len(src) && src[i] != c && src[i] != '\n'; i++ {
				if src[i] == '\\' && i+1 < len(src) {
					i++
					if src[i] == '\n' {
						line++
					}
				}
			}
			i++
		case c == '[':
			if lvl := longBracket(i); lvl >= 0 {
				i = skipLong(i+lvl+2, lvl)
				continue
			}
			if err := open(); err != nil {
				return line, err
			}
			i++
		case c == '(' || c == '{':
			if err := open(); err != nil {
				return line, err
			}
			i++
		case c == ')' || c == ']' || c == '}':
			depth--
			i++
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			j := i
			for j < len(src) && (src[j] == '_' || src[j] >= 'a' && src[j] <= 'z' || src[j] >= 'A' && src[j] <= 'Z' || src[j] >= '0' && src[j] <= '9') {
				j++
			}
			switch string(src[i:j]) {
			case "do", "if", "function", "repeat":
				if err := open(); err != nil {
					return line, err
				}
			case "end", "until":
				depth--
			}
			i = j
		default:
			i++
		}
	}
	return 0, nil
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
	// Cut before parsing: a script may raise a 16 MiB message.
	e.Message = bound(e.Message, maxErrorText)
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
// print and the acmehook module loader. Library functions that can run
// long or allocate much in one Go call are wrapped so that the position
// page names them while they run.
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

	str := L.GetGlobal(lua.StringLibName).(*lua.LTable)
	str.RawSetString("rep", L.NewFunction(m.stringRep(str.RawGetString("rep").(*lua.LFunction))))
	for _, name := range []string{"rep", "find", "match", "gsub", "format", "gmatch", "byte", "upper", "lower", "reverse"} {
		m.track(L, str, "string", name)
	}
	tab := L.GetGlobal(lua.TabLibName).(*lua.LTable)
	for _, name := range []string{"concat", "sort", "insert"} {
		m.track(L, tab, "table", name)
	}
	base := L.Get(lua.GlobalsIndex).(*lua.LTable)
	for _, name := range []string{"unpack", "tostring"} {
		m.track(L, base, "", name)
	}

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

// stringRep is string.rep refusing results larger than maxStringRep: the
// one library function that allocates without bound from small arguments.
func (m *module) stringRep(rep *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
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
	}
}

var modName = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`)

// require resolves name to the acmehook module or a library file; an
// unknown name raises.
func (m *module) require(L *lua.LState, name string) lua.LValue {
	if name == "acmehook" {
		return m.table(L)
	}
	dir := m.cfg.LibDir
	if dir == "" || !modName.MatchString(name) {
		L.RaiseError("module %q not found: only \"acmehook\" can be required", name)
	}
	path := filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(name, ".", "/"))+".lua")
	src, err := readScript(path)
	if err != nil {
		L.RaiseError("module %q not found: %v", name, err)
	}
	if line, err := checkNesting(src); err != nil {
		L.RaiseError("loading module %q: %s:%d: %v", name, path, line, err)
	}
	m.tr.enter("compiling", path, 0)
	fn, err := L.Load(bytes.NewReader(src), path)
	m.tr.leave()
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
