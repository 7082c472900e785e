package luahost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// DefaultExecTimeout bounds an acmehook.exec call without a timeout option.
const DefaultExecTimeout = time.Minute

// execFailed starts the exec trampoline's report that it could not start
// the program.
const execFailed = "luahost-exec: "

// execEnv lists the variables of acmehook's environment a program run by
// acmehook.exec inherits, as plugins do; anything else (a DNS API token,
// the EAB key) reaches it only when the script passes it in opts.env.
var execEnv = []string{"PATH", "HOME", "TMPDIR"}

// exec(argv, [opts]) -> result | nil, err
//
// argv is an array of strings, argv[1] the program (looked up in PATH when
// it has no slash); no shell is involved. opts: timeout (seconds or "30s"),
// env (table of NAME = value added to the minimal environment, execEnv),
// stdin (string), dir (working directory). The result has code, stdout,
// stderr, stdout_truncated, stderr_truncated. A non-zero exit is a result,
// not an error; failing to start, a timeout or a kill by signal is nil,
// err.
func (m *module) exec(L *lua.LState) int {
	ctx := m.ctx(L)
	argvT := L.CheckTable(1)
	n := argvT.Len()
	if n == 0 {
		L.ArgError(1, "argv must be a non-empty array of strings")
	}
	argv := make([]string, n)
	for i := range argv {
		s, ok := argvT.RawGetInt(i + 1).(lua.LString)
		if !ok {
			L.ArgError(1, fmt.Sprintf("argv[%d] is not a string", i+1))
		}
		argv[i] = string(s)
	}
	opts := L.OptTable(2, L.NewTable())
	timeout := durationValue(L, opts.RawGetString("timeout"), 2, DefaultExecTimeout)
	var env []string
	for _, k := range execEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if t, ok := opts.RawGetString("env").(*lua.LTable); ok {
		var extra []string
		t.ForEach(func(k, v lua.LValue) {
			ks, kok := k.(lua.LString)
			if !kok || strings.ContainsAny(string(ks), "=\x00") || ks == "" {
				L.ArgError(2, fmt.Sprintf("env key %s is not a variable name", k))
			}
			extra = append(extra, string(ks)+"="+lua.LVAsString(v))
		})
		sort.Strings(extra)
		env = append(env, extra...)
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fail(L, fmt.Errorf("running %s: %w", argv[0], err))
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, argv[1:]...)
	cmd.Args[0] = argv[0]
	if m.execLimit != "" {
		// Through the trampoline: the program gets acmehook's own
		// address-space limit, not the script host's.
		self, err := executable()
		if err != nil {
			return fail(L, fmt.Errorf("running %s: %w", argv[0], err))
		}
		cmd = exec.CommandContext(ctx, self, append([]string{execArg, m.execLimit, prog}, argv...)...)
	}
	cmd.Env = env
	if s, ok := opts.RawGetString("stdin").(lua.LString); ok {
		cmd.Stdin = strings.NewReader(string(s))
	}
	if s, ok := opts.RawGetString("dir").(lua.LString); ok {
		cmd.Dir = string(s)
	}
	limit := m.cfg.OutputLimit
	stdout, stderr := &cappedBuffer{max: limit}, &cappedBuffer{max: limit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	killGroup(cmd)
	cmd.WaitDelay = time.Second

	m.log.Debug("exec", "argv", argv)
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return fail(L, fmt.Errorf("running %s: stopped after %v: %w", argv[0], timeout, ctx.Err()))
	case errors.As(err, &exitErr) && exitErr.ExitCode() < 0:
		return fail(L, fmt.Errorf("running %s: %w", argv[0], err))
	case err != nil && exitErr == nil:
		return fail(L, fmt.Errorf("running %s: %w", argv[0], err))
	case m.execLimit != "" && cmd.ProcessState.ExitCode() == 127 && bytes.HasPrefix(stderr.buf, []byte(execFailed)):
		msg := strings.TrimSpace(strings.TrimPrefix(string(stderr.buf), execFailed))
		return fail(L, fmt.Errorf("running %s: %s", argv[0], msg))
	}
	res := L.CreateTable(0, 5)
	res.RawSetString("code", lua.LNumber(cmd.ProcessState.ExitCode()))
	res.RawSetString("stdout", lua.LString(stdout.buf))
	res.RawSetString("stderr", lua.LString(stderr.buf))
	res.RawSetString("stdout_truncated", lua.LBool(stdout.truncated))
	res.RawSetString("stderr_truncated", lua.LBool(stderr.truncated))
	L.Push(res)
	return 1
}

// cappedBuffer keeps the first max bytes written and discards the rest.
type cappedBuffer struct {
	buf       []byte
	max       int
	truncated bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.max - len(b.buf)
	if len(p) > room {
		b.truncated = true
		b.buf = append(b.buf, p[:max(room, 0)]...)
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}
