package luahost

import (
	"encoding/binary"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// tracker keeps, on a memory page shared with the Host, which builtin the
// script is in and where it was called from. Writing it is a few memory
// stores, no system call, and the page outlives the process: when the Host
// kills a child stuck in string.find at the deadline, or the child dies of
// an out-of-memory crash inside string.gsub, the Host still reads
// "string.gsub called at scripts/x.lua:12".
//
// Page layout: a little-endian uint32 length n, then n bytes
// "label NUL source NUL line". n = 0: not inside a tracked builtin.
type tracker struct {
	page  []byte // the shared mapping; nil: track nothing
	stack []string
}

const positionPageSize = 4096

func (t *tracker) enter(label, source string, line int) {
	if t == nil || t.page == nil {
		return
	}
	e := label + "\x00" + source + "\x00" + strconv.Itoa(line)
	t.stack = append(t.stack, e)
	t.write(e)
}

func (t *tracker) leave() {
	if t == nil || t.page == nil || len(t.stack) == 0 {
		return
	}
	t.stack = t.stack[:len(t.stack)-1]
	top := ""
	if n := len(t.stack); n > 0 {
		top = t.stack[n-1]
	}
	t.write(top)
}

// reset forgets a run's positions (after a raise unwound past leave).
func (t *tracker) reset() {
	if t == nil || t.page == nil {
		return
	}
	t.stack = t.stack[:0]
	t.write("")
}

func (t *tracker) write(e string) {
	n := copy(t.page[4:], e)
	binary.LittleEndian.PutUint32(t.page, uint32(n))
}

// position is what a position page said.
type position struct {
	Label  string // "string.gsub", "acmehook.files.read", "compiling"
	Source string // script or module path
	Line   int    // 0 if unknown
}

// parsePosition decodes a position page; ok is false when the child was
// not inside a tracked builtin.
func parsePosition(page []byte) (p position, ok bool) {
	if len(page) < 4 {
		return p, false
	}
	n := int(binary.LittleEndian.Uint32(page))
	if n == 0 || n > len(page)-4 {
		return p, false
	}
	parts := strings.SplitN(string(page[4:4+n]), "\x00", 3)
	if len(parts) != 3 {
		return p, false
	}
	p.Label, p.Source = parts[0], parts[1]
	p.Line, _ = strconv.Atoi(parts[2])
	return p, true
}

// where returns the source and current line of the Lua function calling
// the running Go function.
func where(L *lua.LState) (string, int) {
	dbg, ok := L.GetStack(1)
	if !ok {
		return "", 0
	}
	if _, err := L.GetInfo("Sl", dbg, lua.LNil); err != nil {
		return "", 0
	}
	return dbg.Source, dbg.CurrentLine
}

// track replaces t[name], a Go function, with a tracked one labelled
// prefix.name.
func (m *module) track(L *lua.LState, t *lua.LTable, prefix, name string) {
	fn, ok := t.RawGetString(name).(*lua.LFunction)
	if !ok || !fn.IsG {
		return
	}
	label := name
	if prefix != "" {
		label = prefix + "." + name
	}
	t.RawSetString(name, m.tracked(L, label, fn))
}

// tracked returns fn, a Go function, wrapped so that the position page
// names it while it runs.
func (m *module) tracked(L *lua.LState, label string, fn *lua.LFunction) *lua.LFunction {
	return L.NewFunction(func(L *lua.LState) int { return m.callTracked(L, label, fn) })
}

// callTracked runs the Go function fn with the position page naming it:
// in the current call frame (its arguments are the caller's), or, for a
// closure that reads its upvalues (string.gmatch), called properly.
func (m *module) callTracked(L *lua.LState, label string, fn *lua.LFunction) int {
	src, line := where(L)
	m.tr.enter(label, src, line)
	defer m.tr.leave()
	if len(fn.Upvalues) == 0 {
		return fn.GFunction(L)
	}
	n := L.GetTop()
	L.Insert(fn, 1)
	L.Call(n, lua.MultRet)
	return L.GetTop()
}
