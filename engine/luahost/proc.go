package luahost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childEnv lists the variables of acmehook's environment a script host
// inherits: what finds programs and temporary files, local time for
// os.date, system roots and proxies for acmehook.http and acmehook.tls.
// Programs it runs get less (execEnv).
var childEnv = []string{
	"PATH", "HOME", "TMPDIR", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
}

// errNotSent marks a run that never reached its script host: a host kept
// idle may have died meanwhile, and Dispatch tries a fresh one.
var errNotSent = errors.New("run not sent")

// maxMessage bounds one line from a script host; the child cuts what it
// sends well below it.
const maxMessage = 1 << 20

// proc is one script host process, as its Host sees it.
type proc struct {
	cmd    *exec.Cmd
	in     *os.File // the child's stdin
	out    *os.File // the child's stdout
	rd     *bufio.Reader
	stderr *os.File // unlinked file collecting the child's stderr
	page   *os.File // unlinked file holding the position page, or nil
	idle   *time.Timer
	limit  int64 // the child's address-space limit, for messages
}

// executable is the program to re-execute as a script host.
func executable() (string, error) {
	if selfExe != "" {
		return selfExe, nil
	}
	return os.Executable()
}

// startProc starts a script host for h and sends it h's configuration.
func startProc(h *Host) (_ *proc, err error) {
	self, err := executable()
	if err != nil {
		return nil, err
	}
	limit := max(h.opts.AddressSpaceLimit, 0)
	p := &proc{limit: limit}
	var childIn, childOut *os.File
	defer func() {
		childIn.Close()
		childOut.Close()
		if err != nil {
			p.closeFiles()
		}
	}()
	if childIn, p.in, err = os.Pipe(); err != nil {
		return nil, err
	}
	if p.out, childOut, err = os.Pipe(); err != nil {
		return nil, err
	}
	if p.stderr, err = os.CreateTemp("", "acmehook-luahost-stderr-*"); err != nil {
		return nil, err
	}
	os.Remove(p.stderr.Name())
	p.page, _ = newPositionFile() // without it, a killed host's position is unknown

	p.cmd = exec.Command(self, childArg, strconv.FormatInt(limit, 10))
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = childIn, childOut, p.stderr
	p.cmd.Dir = h.opts.Dir
	if p.page != nil {
		p.cmd.ExtraFiles = []*os.File{p.page}
	}
	for _, k := range childEnv {
		if v, ok := os.LookupEnv(k); ok {
			p.cmd.Env = append(p.cmd.Env, k+"="+v)
		}
	}
	if p.cmd.Env == nil {
		p.cmd.Env = []string{}
	}
	p.cmd.SysProcAttr = childSysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	p.rd = bufio.NewReaderSize(p.out, 64<<10)
	if err := p.send(h.config()); err != nil {
		p.kill()
		return nil, fmt.Errorf("configuring the script host: %w", err)
	}
	return p, nil
}

func (p *proc) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = p.in.Write(append(b, '\n'))
	return err
}

// dispatch runs req in p and relays its log records to log. It returns
// the run's failure, or nil, and whether p may serve another run.
func (p *proc) dispatch(ctx context.Context, log *slog.Logger, req *runRequest) (*ScriptError, bool) {
	if p.page != nil {
		p.page.WriteAt(make([]byte, 4), 0)
	}
	if err := p.send(toChild{Run: req}); err != nil {
		serr := p.died(req.Script, fmt.Errorf("sending the run: %w", err))
		serr.Err = errors.Join(serr.Err, errNotSent)
		return serr, false
	}
	msgs := make(chan fromChild)
	rerr := make(chan error, 1)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := p.receive()
			if err != nil {
				rerr <- err
				return
			}
			select {
			case msgs <- m:
			case <-quit:
				return
			}
			if m.Done != nil {
				return
			}
		}
	}()
	defer func() {
		close(quit)
		wg.Wait()
	}()

	deadline := time.Unix(0, req.Deadline)
	kill := time.NewTimer(time.Until(deadline) + StopGrace)
	defer kill.Stop()
	done, canceled := ctx.Done(), false
	for {
		select {
		case m := <-msgs:
			if r := m.Log; r != nil {
				log.LogAttrs(context.WithoutCancel(ctx), r.Level, r.Msg, slogAttrs(r.Attrs)...)
			}
			if m.Done != nil {
				serr := fromWire(m.Done.Error)
				return serr, !canceled && (serr == nil || !errors.Is(serr, ErrMemoryLimit))
			}
		case err := <-rerr:
			return p.died(req.Script, err), false
		case <-done:
			done = nil
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				canceled = true
				p.send(toChild{Cancel: true})
				kill.Reset(StopGrace)
			}
		case <-kill.C:
			p.kill()
			return p.killed(req.Script, ctx), false
		}
	}
}

// receive reads one message.
func (p *proc) receive() (fromChild, error) {
	var line []byte
	for {
		chunk, err := p.rd.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxMessage {
			return fromChild{}, fmt.Errorf("script host sent a message larger than %d bytes", maxMessage)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return fromChild{}, err
		}
		break
	}
	var m fromChild
	if err := json.Unmarshal(line, &m); err != nil {
		return fromChild{}, fmt.Errorf("reading the script host: %w", err)
	}
	return m, nil
}

// fromWire rebuilds a script host's error; Script and Event are filled
// in by Dispatch.
func fromWire(w *wireError) *ScriptError {
	if w == nil {
		return nil
	}
	e := &ScriptError{Line: w.Line, Message: bound(w.Message, maxErrorText), Traceback: bound(w.Traceback, maxErrorText)}
	switch w.Cause {
	case causeDeadline:
		e.Err = context.DeadlineExceeded
	case causeCanceled:
		e.Err = context.Canceled
	case causeMemory:
		e.Err = ErrMemoryLimit
	case causeNotExist:
		e.Err = fmt.Errorf("%s: %w", w.Detail, fs.ErrNotExist)
	case causePermission:
		e.Err = fmt.Errorf("%s: %w", w.Detail, fs.ErrPermission)
	case causeFile:
		e.Err = errors.New(w.Detail)
	}
	return e
}

// killed describes a run whose script host did not report by its deadline
// (or soon after being canceled) and was killed.
func (p *proc) killed(script string, ctx context.Context) *ScriptError {
	e := &ScriptError{Err: context.Cause(ctx)}
	if e.Err == nil {
		e.Err = context.DeadlineExceeded
	}
	what := "run stopped at its deadline"
	if !errors.Is(e.Err, context.DeadlineExceeded) {
		what = "run canceled"
	}
	if pos, ok := p.position(); ok {
		e.Message = fmt.Sprintf("%s: %s did not return, so its script host was killed", what, pos.Label)
		e.Line = pos.at(script, &e.Message)
	} else {
		e.Message = what + ": the script host did not stop and was killed"
	}
	return e
}

// died describes a run whose script host exited or broke the protocol
// (cause) before finishing it. p is stopped.
func (p *proc) died(script string, cause error) *ScriptError {
	// A closed pipe means the child is gone (or going); anything else is a
	// live child that broke the protocol, which kill ends.
	exited := errors.Is(cause, io.EOF) || errors.Is(cause, io.ErrUnexpectedEOF) || errors.Is(cause, syscall.EPIPE)
	p.kill()
	state := p.cmd.ProcessState
	text := p.stderrText()
	e := &ScriptError{Err: ErrCrashed}
	switch {
	case !exited:
		e.Message = "the script host broke the protocol and was killed: " + bound(cause.Error(), 512)
	case strings.Contains(text, "out of memory"), strings.Contains(text, "cannot allocate memory"):
		e.Err = ErrMemoryLimit
		e.Message = "the script host ran out of memory"
		if p.limit > 0 {
			e.Message += " (address-space limit " + sizeText(p.limit) + ")"
		}
	case strings.Contains(text, "stack exceeds"):
		e.Message = "the script host overflowed its stack (nesting too deep?)"
	case state != nil && !state.Exited():
		e.Message = "the script host was killed by " + state.String()
		if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signal() == syscall.SIGKILL {
			// Not by us: the kernel's OOM killer, most likely.
			e.Err = ErrMemoryLimit
		}
	default:
		e.Message = "the script host crashed"
		if first, _, _ := strings.Cut(strings.TrimSpace(text), "\n"); first != "" {
			e.Message += ": " + bound(first, 512)
		} else if state != nil {
			e.Message += " (" + state.String() + "): " + cause.Error()
		} else {
			e.Message += ": " + cause.Error()
		}
	}
	if pos, ok := p.position(); ok {
		e.Message += " in " + pos.Label
		e.Line = pos.at(script, &e.Message)
	}
	return e
}

// at returns pos's line if it is in script; otherwise it adds the place
// to msg and returns 0.
func (pos position) at(script string, msg *string) int {
	if pos.Source == script || pos.Source == "" {
		return pos.Line
	}
	*msg += " (" + pos.Source + ":" + strconv.Itoa(pos.Line) + ")"
	return 0
}

// position reads where a stopped child was, from the position page.
func (p *proc) position() (position, bool) {
	if p.page == nil {
		return position{}, false
	}
	page := make([]byte, positionPageSize)
	if _, err := p.page.ReadAt(page, 0); err != nil && !errors.Is(err, io.EOF) {
		return position{}, false
	}
	return parsePosition(page)
}

// stderrText returns the start of what the child wrote to stderr: the Go
// runtime's report of a crash.
func (p *proc) stderrText() string {
	b := make([]byte, 4096)
	n, _ := p.stderr.ReadAt(b, 0)
	return string(bytes.ToValidUTF8(b[:n], nil))
}

// stop ends an idle (or finished) child: it closes its stdin, which makes
// it exit, and kills it if it has not within StopGrace.
func (p *proc) stop() {
	p.in.Close()
	t := time.AfterFunc(StopGrace, func() { p.cmd.Process.Kill() })
	p.cmd.Wait()
	t.Stop()
	p.closeFiles()
}

// kill ends the child at once and reaps it. The position page and stderr
// stay readable until stop.
func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	p.out.Close() // unblocks a pending receive
}

// closeFiles closes the Host's ends; it unblocks a pending receive.
func (p *proc) closeFiles() {
	for _, f := range []*os.File{p.in, p.out, p.stderr, p.page} {
		if f != nil {
			f.Close()
		}
	}
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + " GiB"
	case n >= 1<<20:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
