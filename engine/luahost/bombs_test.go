package luahost

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// limitTestAddressSpace runs the rest of the test under a soft RLIMIT_AS
// of n bytes, as acmehook under "ulimit -v": the script hosts inherit it
// and lower it further; this process must never reach it.
func limitTestAddressSpace(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur <= n {
		return
	}
	lim := old
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_AS, &old) })
}

// TestBombs: each script that used to end acmehook with "fatal error: out
// of memory" or run for minutes past its deadline ends in a script error
// that names the script, the line and the builtin, within the deadline
// plus StopGrace, and the host goes on serving scripts.
func TestBombs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the address-space limit and position page are tested on Linux")
	}
	limitTestAddressSpace(t, 4<<30)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	h := New(Options{Timeout: timeout})
	defer h.Close()

	tests := []struct {
		name   string
		src    string
		line   int
		want   []string // in the message
		causes []error  // one of them is the cause; nil: any

		cancel time.Duration // cancel the run after this long, as SIGTERM does
	}{
		{
			name: "gsub with a 16 MiB replacement",
			src:  "local s = ('x'):rep(1000)\nlocal r = s:gsub('x', ('y'):rep(16 * 1024 * 1024))\n",
			// Out of memory or out of time, whichever comes first.
			line:   2,
			want:   []string{"string.gsub"},
			causes: []error{ErrMemoryLimit, context.DeadlineExceeded},
		},
		{
			name:   "concat with a 16 MiB separator",
			src:    "local t = {}\nfor i = 1, 1000 do t[i] = 'x' end\nlocal s = table.concat(t, ('y'):rep(16 * 1024 * 1024))\n",
			line:   3,
			want:   []string{"table.concat"},
			causes: []error{ErrMemoryLimit, context.DeadlineExceeded},
		},
		{
			name: "json of a 40-level shared table DAG",
			src:  "local acmehook = require('acmehook')\nlocal t = {}\nfor i = 1, 40 do t = {t, t} end\nassert(acmehook.json.encode(t))\n",
			line: 4,
			want: []string{"encoding json: more than 1048576 values"},
		},
		{
			name:   "backtracking pattern",
			src:    "local n = 1\nstring.find(('a'):rep(80), ('a-'):rep(40) .. 'b')\n",
			line:   2,
			want:   []string{"run stopped at its deadline", "string.find did not return"},
			causes: []error{context.DeadlineExceeded},
		},
		{
			name:   "backtracking pattern canceled",
			src:    "string.find(('a'):rep(80), ('a-'):rep(40) .. 'b')\n",
			line:   1,
			want:   []string{"run canceled", "string.find did not return"},
			causes: []error{context.Canceled},
			cancel: 300 * time.Millisecond,
		},
		{
			name:   "read of a FIFO",
			src:    "local acmehook = require('acmehook')\n\nlocal s = acmehook.files.read(" + luaQuote(fifo) + ")\n",
			line:   3,
			want:   []string{"run stopped at its deadline", "acmehook.files.read did not return"},
			causes: []error{context.DeadlineExceeded},
		},
		{
			name: "1 MB of nested braces",
			src:  "local t = " + strings.Repeat("{", 500_000) + strings.Repeat("}", 500_000) + "\n",
			line: 1,
			want: []string{"syntax error", "nested more than 200 deep"},
		},
		{
			name: "nested blocks",
			src:  "local x = 1\n" + strings.Repeat("do ", 300) + strings.Repeat("end ", 300) + "\n",
			line: 2,
			want: []string{"syntax error", "nested more than 200 deep"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeScript(t, "bomb.lua", tt.src)
			ctx := context.Background()
			if tt.cancel > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				time.AfterFunc(tt.cancel, cancel)
			}
			start := time.Now()
			err := h.Dispatch(ctx, path, event.Event{Type: event.Issued})
			elapsed := time.Since(start)
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), err)
			var se *ScriptError
			if !errors.As(err, &se) {
				t.Fatalf("Dispatch = %v, want *ScriptError", err)
			}
			if se.Script != path || se.Line != tt.line {
				t.Errorf("error at %s:%d, want %s:%d", se.Script, se.Line, path, tt.line)
			}
			for _, w := range tt.want {
				if !strings.Contains(se.Message, w) {
					t.Errorf("message %q does not contain %q", se.Message, w)
				}
			}
			if tt.causes != nil && !slices.ContainsFunc(tt.causes, func(c error) bool { return errors.Is(err, c) }) {
				t.Errorf("error unwraps to none of %v", tt.causes)
			}
			if limit := timeout + StopGrace + 5*time.Second; elapsed > limit {
				t.Errorf("Dispatch took %v, want at most %v", elapsed, limit)
			}
			if err := run(t, h, "assert(('ok'):rep(2) == 'okok')", event.Event{Type: event.Issued}); err != nil {
				t.Errorf("Dispatch after the bomb = %v", err)
			}
		})
	}
}

// TestExecEnvironment: a program run by acmehook.exec sees PATH, HOME and
// TMPDIR and what the script passes, never the rest of acmehook's
// environment (a DNS API token, the EAB key).
func TestExecEnvironment(t *testing.T) {
	t.Setenv("DNS_API_TOKEN", "dns-secret")
	t.Setenv("ACMEHOOK_EAB_HMAC_KEY", "eab-secret")
	t.Setenv("HOME", "/home/acme")
	src := `
local acmehook = require("acmehook")
local r = assert(acmehook.exec({"/bin/sh", "-c", "env"}, {env = {DEPLOY_TOKEN = acmehook.vars.token}}))
local seen = {}
for line in r.stdout:gmatch("[^\n]+") do
  local k = line:match("^([^=]+)=")
  seen[#seen + 1] = k
  assert(k ~= "DNS_API_TOKEN" and k ~= "ACMEHOOK_EAB_HMAC_KEY", "the program sees " .. line)
  assert(not line:find("secret"), "the program sees " .. line)
end
assert(r.stdout:find("HOME=/home/acme\n", 1, true), r.stdout)
assert(r.stdout:find("DEPLOY_TOKEN=from-vars\n", 1, true), r.stdout)
assert(r.stdout:find("PATH=", 1, true), r.stdout)
`
	h := New(Options{Vars: map[string]string{"token": "from-vars"}})
	defer h.Close()
	if err := run(t, h, src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
}

// TestBoundedErrors: a script's error text is cut to a few KiB.
func TestBoundedErrors(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	err := run(t, h, "error(('x'):rep(16 * 1024 * 1024))", event.Event{Type: event.Issued})
	var se *ScriptError
	if !errors.As(err, &se) {
		t.Fatalf("Dispatch = %v, want *ScriptError", err)
	}
	if n := len(se.Error()); n > 2*maxErrorText {
		t.Errorf("len(Error()) = %d, want at most %d", n, 2*maxErrorText)
	}
	if !strings.Contains(se.Message, "cut: ") {
		t.Errorf("message %q does not say it was cut", se.Message[len(se.Message)-64:])
	}
}

// TestScriptSize: a script larger than MaxScriptSize is refused before it
// is compiled.
func TestScriptSize(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	err := run(t, h, "-- "+strings.Repeat("x", MaxScriptSize)+"\n", event.Event{Type: event.Issued})
	var se *ScriptError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "larger than the limit of 1048576 bytes") {
		t.Fatalf("Dispatch = %v, want a script error saying it is too large", err)
	}
}

// TestScriptHostGone: an idle script host that died is replaced.
func TestScriptHostGone(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	if err := run(t, h, "local x = 1", event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
	// Kill the idle script host behind the Host's back: the next run
	// starts a fresh one.
	h.pool.mu.Lock()
	for _, p := range h.pool.idle {
		p.cmd.Process.Kill()
	}
	h.pool.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	if err := run(t, h, "local x = 1", event.Event{Type: event.Issued}); err != nil {
		t.Errorf("Dispatch after the idle script host died = %v", err)
	}
}

// TestBoundedLogs: a log record with a hundred 1 MiB fields arrives cut,
// and the script host survives it.
func TestBoundedLogs(t *testing.T) {
	var buf bytes.Buffer
	h := New(Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	defer h.Close()
	src := `
local acmehook = require("acmehook")
local big, fields = ("x"):rep(1024 * 1024), {}
for i = 1, 100 do fields["f" .. i] = big end
acmehook.log.info(big, fields)
`
	if err := run(t, h, src, event.Event{Type: event.Issued}); err != nil {
		t.Fatalf("Dispatch = %v", err)
	}
	if n := buf.Len(); n > 2*maxLogRecord || !strings.Contains(buf.String(), "more fields cut") {
		t.Errorf("logged %d bytes (want at most %d, with the cut said): %.200s", n, 2*maxLogRecord, buf.String())
	}
}
