package luahost

import (
	"context"
	"errors"
	"go/build"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// writeScript writes src as name in a fresh directory and returns its path.
func writeScript(t testing.TB, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// run dispatches ev to src with h.
func run(t testing.TB, h *Host, src string, ev event.Event) error {
	t.Helper()
	return h.Dispatch(context.Background(), writeScript(t, "script.lua", src), ev)
}

func TestSandboxUnavailable(t *testing.T) {
	h := New(Options{Timeout: 5 * time.Second})
	tests := []struct {
		name, code, want string
	}{
		{"os.execute", `os.execute("true")`, "attempt to call a non-function object"},
		{"os.exit", `os.exit(1)`, "attempt to call a non-function object"},
		{"os.getenv", `os.getenv("HOME")`, "attempt to call a non-function object"},
		{"os.remove", `os.remove("/tmp/x")`, "attempt to call a non-function object"},
		{"io.open", `io.open("/etc/passwd")`, "attempt to index a non-table object(nil) with key 'open'"},
		{"io.popen", `io.popen("id")`, "attempt to index a non-table object(nil) with key 'popen'"},
		{"dofile", `dofile("/etc/passwd")`, "attempt to call a non-function object"},
		{"loadfile", `loadfile("/etc/passwd")`, "attempt to call a non-function object"},
		{"loadstring", `loadstring("return 1")`, "attempt to call a non-function object"},
		{"load", `load(function() return nil end)`, "attempt to call a non-function object"},
		{"require unknown", `require("socket")`, `module "socket" not found`},
		{"require path", `require("../etc/passwd")`, `module "../etc/passwd" not found`},
		{"debug", `debug.getinfo(1)`, "attempt to index a non-table object(nil) with key 'getinfo'"},
		{"package", `package.loadlib("x", "y")`, "attempt to index a non-table object(nil) with key 'loadlib'"},
		{"coroutine", `coroutine.create(print)`, "attempt to index a non-table object(nil) with key 'create'"},
		{"string.rep bomb", `string.rep("x", 1e9)`, "result larger than"},
		{"string.rep overflow", `string.rep("xx", 2^62)`, "result larger than"},
		{"string.rep as a method", `local s = ("x"):rep(1e9)`, "result larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "local acmehook = require(\"acmehook\")\n" + tt.code + "\n"
			err := run(t, h, src, event.Event{Type: event.Issued})
			var se *ScriptError
			if !errors.As(err, &se) {
				t.Fatalf("Dispatch = %v, want *ScriptError", err)
			}
			if se.Line != 2 || !strings.Contains(se.Message, tt.want) {
				t.Errorf("Dispatch error line %d message %q, want line 2 containing %q", se.Line, se.Message, tt.want)
			}
		})
	}
}

func TestSandboxAvailable(t *testing.T) {
	src := `
local acmehook = require("acmehook")
assert(type(os.time()) == "number" and type(os.clock()) == "number")
assert(os.date("!%Y", 0) == "1970")
assert(string.format("%05.1f", math.pi) == "003.1")
assert(table.concat({"a", "b"}, ",") == "a,b")
assert(require("acmehook") == acmehook)
local ok, err = pcall(error, "x")
assert(not ok)
`
	if err := run(t, New(Options{}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatalf("Dispatch = %v, want nil", err)
	}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name, code, want string
		deadline         bool
	}{
		{"loop", "while true do end", "run stopped at its deadline", true},
		{"loop in pcall", "while true do pcall(function() while true do end end) end", "run stopped at its deadline", true},
		{"recursion", "local function f(n) return 1 + f(n + 1) end\nf(1)", "stack overflow", false},
		{"tail recursion", "local function f(n) return f(n + 1) end\nf(1)", "run stopped at its deadline", true},
	}
	h := New(Options{Timeout: 200 * time.Millisecond})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			start := time.Now()
			err := run(t, h, tt.code, event.Event{Type: event.Issued})
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Dispatch took %v", d)
			}
			var se *ScriptError
			if !errors.As(err, &se) || !strings.Contains(se.Message, tt.want) {
				t.Fatalf("Dispatch = %v, want *ScriptError containing %q", err, tt.want)
			}
			t.Logf("error: %v", se)
			if got := errors.Is(err, context.DeadlineExceeded); got != tt.deadline {
				t.Errorf("errors.Is(err, DeadlineExceeded) = %v, want %v", got, tt.deadline)
			}
			if se.Line == 0 {
				t.Errorf("ScriptError.Line = 0, want the line")
			}
			if after := runtime.NumGoroutine(); after > before+1 {
				t.Errorf("goroutines %d -> %d after the run", before, after)
			}
		})
	}
	// The host still works after stopped runs.
	if err := run(t, h, `assert(1 + 1 == 2)`, event.Event{Type: event.Issued}); err != nil {
		t.Fatalf("Dispatch after limits = %v", err)
	}
}

// TestMemoryGuard: scripts that grow a string, a table or the value stack
// without bound are stopped long before their (generous) deadline, with an
// error that says why, and the host keeps working.
func TestMemoryGuard(t *testing.T) {
	tests := []struct {
		name, code, want string
		cause            error
	}{
		{"doubling string", `local s = "x" while true do s = s .. s end`, "memory limit", ErrMemoryLimit},
		{"growing table", `local t = {} local i = 0 while true do i = i + 1; t[i] = {i} end`, "memory limit", ErrMemoryLimit},
		{"huge unpack", `local t = {} for i = 1, 3e5 do t[i] = i end
print(unpack(t))`, "value stack overflow", nil},
	}
	h := New(Options{Timeout: 20 * time.Second, MemoryLimit: 32 << 20})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t, h, tt.code, event.Event{Type: event.Issued})
			var se *ScriptError
			if !errors.As(err, &se) || !strings.Contains(se.Message, tt.want) || se.Line == 0 {
				t.Fatalf("Dispatch = %v, want *ScriptError with a line containing %q", err, tt.want)
			}
			t.Logf("error: %v", se)
			if errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("stopped by the deadline, want the memory limit")
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("errors.Is(err, %v) = false", tt.cause)
			}
		})
	}
	if err := run(t, h, `local t = {} for i = 1, 1000 do t[i] = string.rep("x", 100) end`, event.Event{Type: event.Issued}); err != nil {
		t.Fatalf("Dispatch of a small script after the guard stopped runs = %v", err)
	}
}

func TestScriptErrors(t *testing.T) {
	tests := []struct {
		name, src string
		ev        event.Type
		line      int
		want      string
	}{
		{"nil index", "local acmehook = require('acmehook')\nacmehook.on('issued', function(ev)\n  local x = ev.nothing.field\nend)\n", event.Issued, 3, "attempt to index a non-table object(nil) with key 'field'"},
		{"error call", "local acmehook = require('acmehook')\nacmehook.on('renew', function(ev)\n\n  error('reload failed')\nend)\n", event.Renew, 4, "reload failed"},
		{"returned error", "local acmehook = require('acmehook')\nacmehook.on('challenge-provision', function(ev)\n  return nil, 'no zone for ' .. ev.challenge.identifier\nend)\n", event.ChallengeProvision, 2, "handler returned error: no zone for a.example"},
		{"returned false", "local acmehook = require('acmehook')\nacmehook.on('issued', function(ev) return false end)\n", event.Issued, 2, "handler returned error: false"},
		{"syntax", "local x = \nif then end\n", event.Issued, 2, "syntax error"},
		{"unknown event", "local acmehook = require('acmehook')\nacmehook.on('isued', print)\n", event.Issued, 2, `unknown event "isued"`},
		{"misuse raises", "local acmehook = require('acmehook')\nacmehook.files.read()\n", event.Issued, 2, "bad argument #1"},
		{"octal number mode raises", "local acmehook = require('acmehook')\nacmehook.files.write('/tmp/x', 'y', {mode = 0644})\n", event.Issued, 2, "mode must be an octal string"},
	}
	h := New(Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeScript(t, "nginx.lua", tt.src)
			err := h.Dispatch(context.Background(), path, event.Event{Type: tt.ev, Challenge: &event.Challenge{Identifier: "a.example"}})
			var se *ScriptError
			if !errors.As(err, &se) {
				t.Fatalf("Dispatch = %v, want *ScriptError", err)
			}
			t.Logf("error: %v", se)
			if se.Script != path || se.Line != tt.line || se.Event != tt.ev || !strings.Contains(se.Message, tt.want) {
				t.Errorf("ScriptError = {%s %d %s %q}, want {%s %d %s containing %q}", se.Script, se.Line, se.Event, se.Message, path, tt.line, tt.ev, tt.want)
			}
			if want := path + ":" + strconv.Itoa(tt.line) + ": "; !strings.HasPrefix(se.Error(), want) {
				t.Errorf("Error() = %q, want prefix %q", se.Error(), want)
			}
		})
	}
}

// BenchmarkDispatch measures one event dispatched to a small script: a fresh
// sandboxed state in a script host kept from the previous event, loading and
// compiling the script, running its top level and one handler that reads
// event fields and logs (to a discarding logger), and the round trip to the
// script host.
func BenchmarkDispatch(b *testing.B) { benchmarkDispatch(b, false) }

// BenchmarkDispatchNewHost is BenchmarkDispatch with a new Host, so a new
// script host process, for every event: what the first event of a run
// costs.
func BenchmarkDispatchNewHost(b *testing.B) { benchmarkDispatch(b, true) }

func benchmarkDispatch(b *testing.B, fresh bool) {
	src := `
local acmehook = require("acmehook")
acmehook.on("renew", function(ev)
  local names = table.concat(ev.domains, ",")
  if ev.serial == ev.previous_serial then error("same serial") end
  acmehook.log.info("renewed", {cert = ev.cert_name, names = names, serial = ev.serial})
end)
acmehook.on("failed", function(ev) acmehook.log.error(ev.error.message) end)
`
	path := writeScript(b, "bench.lua", src)
	ev := event.Event{Type: event.Renew, Cert: "www", Domains: []string{"www.example", "example"}, Serial: "0a", PreviousSerial: "09", NotAfter: time.Now()}
	h := New(Options{})
	defer func() { h.Close() }()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if fresh {
			h.Close()
			h = New(Options{})
		}
		if err := h.Dispatch(ctx, path, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// TestImports keeps the package free of acmehook imports but the leaf
// event vocabulary: the engine imports luahost, never the reverse.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range append(pkg.Imports, pkg.TestImports...) {
		if strings.HasPrefix(imp, "github.com/acmehook/acmehook") && imp != "github.com/acmehook/acmehook/engine/event" {
			t.Errorf("luahost imports %s", imp)
		}
	}
}
