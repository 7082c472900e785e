package host_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// bin maps a test plugin's name to its executable, built once in TestMain.
var bin = map[string]string{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sdk-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		// One go build for all: each main package becomes dir/<its base name>.
		pkgs := []string{"../internal/testplugins/faulty", "../internal/testplugins/wrongversion", "../internal/testplugins/bare", "../sdk/example",
			"../../plugins/standalone", "./testdata/killhost"}
		if out, err := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the test plugins: %v\n%s", err, out)
			return 1
		}
		for _, pkg := range pkgs {
			bin[filepath.Base(pkg)] = filepath.Join(dir, filepath.Base(pkg))
		}
		return m.Run()
	}()
	os.Exit(code)
}

func launch(t testing.TB, name string, opts host.LaunchOptions) *host.Plugin {
	t.Helper()
	opts.Name = name
	opts.Path = bin[name]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, opts)
	if err != nil {
		t.Fatalf("Launch(%s) = %v", name, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func challenge(domain string) sdk.Challenge {
	return sdk.Challenge{
		Type:             "http-01",
		Identifier:       sdk.Identifier{Type: "dns", Value: domain},
		Token:            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
		KeyAuthorization: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
	}
}

// TestExamplePlugin drives the vendor example as a subprocess: Present sets
// a TXT record that the DNS server answers, CleanUp removes it.
func TestExamplePlugin(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	p := launch(t, "example", host.LaunchOptions{
		Config: map[string]any{"endpoint": pebble.DNSManagementURL, "token": "s3cret", "resolvers": []any{pebble.DNSAddr}, "propagation_interval": "50ms"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil || info.Name != "example" || len(info.ChallengeTypes) != 1 || info.ChallengeTypes[0] != "dns-01" || !info.WaitsForPropagation {
		t.Fatalf("Info = %+v, %v, want example solving dns-01 and waiting for propagation", info, err)
	}
	c := challenge("example.com")
	c.Type = "dns-01"
	c.DNS01RecordName = "_acme-challenge.example.com."
	c.DNS01RecordValue = "dGhlIHJlY29yZCB2YWx1ZSBmb3IgdGhlIHRlc3QgaGVyZQ"
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v", err)
	}
	if got := txt(t, pebble.DNSAddr, c.DNS01RecordName); len(got) != 1 || got[0] != c.DNS01RecordValue {
		t.Errorf("TXT %s after Present = %q, want [%q]", c.DNS01RecordName, got, c.DNS01RecordValue)
	}
	if _, err := p.Wait(ctx, &sdk.WaitRequest{Challenge: c}); err != nil {
		t.Errorf("Wait = %v", err)
	}
	if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	if got := txt(t, pebble.DNSAddr, c.DNS01RecordName); len(got) != 0 {
		t.Errorf("TXT %s after CleanUp = %q, want none", c.DNS01RecordName, got)
	}
}

// TestBarePlugin drives a plugin written from solver.proto and the README
// alone, without go-plugin or Serve, as one in another language would be:
// the handshake, AutoMTLS, the calls with real effects, and a prompt exit
// through go-plugin's GRPCController.Shutdown when closed.
func TestBarePlugin(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	p := launch(t, "bare", host.LaunchOptions{Env: []string{"BARE_DIR=" + dir}, Config: map[string]any{}, Logger: slog.New(rec)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := p.Info(ctx, &host.InfoRequest{}); err != nil || info.Name != "bare" || !slices.Equal(info.ChallengeTypes, []string{"http-01"}) {
		t.Fatalf("Info = %+v, %v, want bare solving http-01", info, err)
	}
	c := challenge("bare.example.com")
	path := filepath.Join(dir, c.Token)
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != c.KeyAuthorization {
		t.Errorf("ReadFile(%s) after Present = %q, %v, want %q", path, b, err, c.KeyAuthorization)
	}
	if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(%s) after CleanUp = %v, want it gone", path, err)
	}
	c.Token = "../escape"
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err == nil || !strings.HasPrefix(err.Error(), "plugin bare: present bare.example.com: token") {
		t.Errorf("Present(hostile token) = %v, want the plugin's refusal naming it", err)
	}
	p.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	exited := false
	for _, r := range rec.records {
		switch {
		case r.Message == "plugin failed to exit gracefully":
			t.Error("bare plugin was killed, want it to exit on Shutdown")
		case r.Message == "plugin process exited":
			exited = r.Level == slog.LevelInfo
		}
	}
	if !exited {
		t.Error("no record of the bare plugin exiting with status 0")
	}
}

func txt(t *testing.T, server, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("querying TXT %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if tx, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(tx.Txt, ""))
		}
	}
	return out
}

// TestFaults checks that each fault is a clear error naming the plugin, and
// that the host (this test process) and, where it survives, the plugin go on.
func TestFaults(t *testing.T) {
	tests := []struct {
		name, mode  string
		timeout     time.Duration
		cancelAfter time.Duration // the caller cancels ctx mid-call
		want        string
		wantIs      error
		survives    bool
	}{
		{name: "panic", mode: "panic", timeout: 5 * time.Second, want: "plugin faulty: present example.com: plugin panicked in Present: boom in example.com", survives: true},
		{name: "hang", mode: "hang", timeout: 300 * time.Millisecond, want: "plugin faulty: present example.com: context deadline exceeded", wantIs: context.DeadlineExceeded, survives: true},
		{name: "hang, caller cancels", mode: "hang", timeout: 5 * time.Second, cancelAfter: 300 * time.Millisecond,
			want: "plugin faulty: present example.com: context canceled", wantIs: context.Canceled, survives: true},
		{name: "exit", mode: "exit", timeout: 5 * time.Second, want: "plugin faulty: present example.com: host: plugin process exited", wantIs: host.ErrExited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			p := launch(t, "faulty", host.LaunchOptions{Env: []string{"FAULTY_PIDFILE=" + pidFile}, Config: map[string]any{"mode": tt.mode}})
			pid := readPID(t, pidFile)
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			if tt.cancelAfter > 0 {
				time.AfterFunc(tt.cancelAfter, cancel)
			}
			_, err := p.Present(ctx, &sdk.PresentRequest{Challenge: challenge("example.com")})
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Present = %v, want %q", err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Present = %v, want errors.Is %v", err, tt.wantIs)
			}
			// Cleanup is attempted after a failed Present.
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			_, err = p.CleanUp(cctx, &sdk.CleanUpRequest{Challenge: challenge("example.com")})
			if tt.survives && err != nil {
				t.Errorf("CleanUp after %s = %v, want the plugin alive", tt.mode, err)
			}
			if !tt.survives && !errors.Is(err, host.ErrExited) {
				t.Errorf("CleanUp after %s = %v, want %v", tt.mode, err, host.ErrExited)
			}
			// The exit is noticed asynchronously.
			for deadline := time.Now().Add(3 * time.Second); !tt.survives && !p.Exited() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if p.Exited() == tt.survives {
				t.Errorf("Exited() after %s = %v, want %v", tt.mode, p.Exited(), !tt.survives)
			}
			start := time.Now()
			p.Close()
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Close took %v", d)
			}
			waitGone(t, pid)
		})
	}
}

// readPID returns the process id a test plugin wrote to file.
func readPID(t *testing.T, file string) int {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(file)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading the plugin's pid from %s: %q, %v", file, b, err)
		}
	}
}

// waitGone fails the test unless process pid is gone (killed and reaped)
// within a moment.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("plugin process %d still exists", pid)
			return
		}
	}
}

// TestLaunchWithoutHandshake: a program that never completes the
// handshake is killed at StartTimeout, or as soon as the caller cancels
// ctx, and Launch says which.
func TestLaunchWithoutHandshake(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "silent")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho $$ > \"$PIDFILE\"\nexec sleep 60\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		startTimeout time.Duration
		cancelAfter  time.Duration
		want         string
		wantIs       error
	}{
		{name: "start timeout", startTimeout: 500 * time.Millisecond,
			want: "plugin silent: starting " + script + ": timeout while waiting for plugin to start"},
		{name: "caller cancels", startTimeout: 20 * time.Second, cancelAfter: 500 * time.Millisecond,
			want: "plugin silent: starting " + script + ": context canceled", wantIs: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelAfter > 0 {
				time.AfterFunc(tt.cancelAfter, cancel)
			}
			start := time.Now()
			p, err := host.Launch(ctx, host.LaunchOptions{Name: "silent", Path: script, StartTimeout: tt.startTimeout, Env: []string{"PIDFILE=" + pidFile}})
			if err == nil {
				p.Close()
				t.Fatalf("Launch = nil error, want %q", tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Launch returned after %v", d)
			}
			if err.Error() != tt.want {
				t.Errorf("Launch = %v, want %q", err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Launch = %v, want errors.Is %v", err, tt.wantIs)
			}
			waitGone(t, readPID(t, pidFile))
		})
	}
}

func TestLaunchFaults(t *testing.T) {
	sum := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	tests := []struct {
		name   string
		opts   host.LaunchOptions
		want   string
		wantIs error
	}{
		{name: "wrong protocol version", opts: host.LaunchOptions{Name: "old", Path: bin["wrongversion"]},
			want: "plugin old: starting " + bin["wrongversion"] + ": host: plugin speaks another solver protocol version (acmehook speaks 1; rebuild the plugin with this acmehook's SDK): incompatible API version with plugin. Plugin version: 99", wantIs: host.ErrProtocolVersion},
		{name: "checksum mismatch", opts: host.LaunchOptions{Name: "faulty", Path: bin["faulty"], SHA256: sum(bin["example"])},
			want: "plugin faulty: starting " + bin["faulty"] + ": host: plugin binary checksum mismatch", wantIs: host.ErrChecksum},
		{name: "bad checksum", opts: host.LaunchOptions{Name: "faulty", Path: bin["faulty"], SHA256: "abc"},
			want: `plugin faulty: starting ` + bin["faulty"] + `: sha256 "abc" is not 64 hex digits`},
		{name: "bad environment", opts: host.LaunchOptions{Name: "faulty", Path: bin["faulty"], Env: []string{"NOEQUALS"}},
			want: `plugin faulty: starting ` + bin["faulty"] + `: environment entry "NOEQUALS" is not KEY=value`},
		{name: "missing binary", opts: host.LaunchOptions{Name: "gone", Path: "/nonexistent/plugin"},
			want: "plugin gone: starting /nonexistent/plugin: "},
		{name: "bad config", opts: host.LaunchOptions{Name: "faulty", Path: bin["faulty"], Config: map[string]any{"mood": "ok"}},
			want: `plugin faulty: configure: decoding configuration: json: unknown field "mood"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := host.Launch(ctx, tt.opts)
			if err == nil {
				p.Close()
				t.Fatalf("Launch = nil error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Launch = %v, want %q", err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Launch = %v, want errors.Is %v", err, tt.wantIs)
			}
		})
	}
	t.Run("checksum match", func(t *testing.T) {
		p := launch(t, "faulty", host.LaunchOptions{SHA256: sum(bin["faulty"]), Config: map[string]any{"mode": "ok"}})
		if _, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com")}); err != nil {
			t.Errorf("Present = %v", err)
		}
	})
}

func TestEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("ACMEHOOK_TEST_HOST_SECRET", "do-not-pass")
	p := launch(t, "faulty", host.LaunchOptions{Env: []string{"VENDOR_TOKEN=granted"}, Config: map[string]any{"mode": "env"}})
	_, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com")})
	if err == nil {
		t.Fatal("Present = nil, want the environment as error")
	}
	var names []string
	for _, kv := range strings.Split(strings.TrimPrefix(err.Error(), "plugin faulty: present example.com: env: "), ";") {
		names = append(names, strings.SplitN(kv, "=", 2)[0])
	}
	allowed := map[string]bool{"PATH": true, "HOME": true, "TMPDIR": true, "VENDOR_TOKEN": true, "ACMEHOOK_PLUGIN": true,
		"PLUGIN_MIN_PORT": true, "PLUGIN_MAX_PORT": true, "ACMEHOOK_PLUGIN_SERVER_CERT_FD": true, "PLUGIN_PROTOCOL_VERSIONS": true, "PLUGIN_CLIENT_CERT": true}
	for _, n := range names {
		if !allowed[n] {
			t.Errorf("plugin environment has %s; want only %v", n, allowed)
		}
	}
	if !strings.Contains(err.Error(), "VENDOR_TOKEN=granted") {
		t.Errorf("plugin environment %q lacks VENDOR_TOKEN from LaunchOptions.Env", err)
	}
	// AutoMTLS: the host hands the plugin its client certificate.
	if !strings.Contains(err.Error(), "PLUGIN_CLIENT_CERT=-----BEGIN CERTIFICATE-----") {
		t.Errorf("plugin environment %q lacks PLUGIN_CLIENT_CERT: AutoMTLS is off", err)
	}
}

// recorder is a slog handler that keeps records.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.mu.Lock()
	r.records = append(r.records, rec)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{r: r, attrs: as}
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

type recorderView struct {
	r     *recorder
	attrs []slog.Attr
}

func (v *recorderView) Enabled(context.Context, slog.Level) bool { return true }
func (v *recorderView) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(v.attrs...)
	return v.r.Handle(ctx, rec)
}
func (v *recorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{r: v.r, attrs: append(append([]slog.Attr{}, v.attrs...), as...)}
}
func (v *recorderView) WithGroup(string) slog.Handler { return v }

func TestPluginLogsReachHostLogger(t *testing.T) {
	rec := &recorder{}
	p := launch(t, "faulty", host.LaunchOptions{Logger: slog.New(rec), Config: map[string]any{"mode": "ok"}})
	if _, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("logs.example.com")}); err != nil {
		t.Fatal(err)
	}
	// Stdout travels asynchronously over go-plugin's stdio stream.
	printed := func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.records {
			if r.Message == "printed to stdout for logs.example.com" {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !printed() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !printed() {
		t.Error("no record of the plugin's stdout line in the host log")
	}
	p.Close() // flushes stderr
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, r := range rec.records {
		if r.Message != "presenting" {
			continue
		}
		var plugin, chal string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "plugin":
				plugin = a.Value.String()
			case "challenge":
				chal = fmt.Sprint(a.Value.Any())
			}
			return true
		})
		if r.Level != slog.LevelInfo || plugin != "faulty" || !strings.Contains(chal, "logs.example.com") {
			t.Errorf("record %q: level %v plugin %q challenge %q, want INFO, faulty, logs.example.com", r.Message, r.Level, plugin, chal)
		}
		if strings.Contains(chal, "9jg46WB3rR") {
			t.Errorf("challenge logged with its key authorization: %s", chal)
		}
		return
	}
	t.Errorf("no record \"presenting\" among %d host log records", len(rec.records))
}

// TestPluginLogRecords: each record of a plugin, and of go-plugin about
// it, reaches the host logger at its level with one plugin attribute, the
// host's time, no hclog timestamp, and numbers and durations as logged.
func TestPluginLogRecords(t *testing.T) {
	rec := &recorder{}
	start := time.Now()
	p := launch(t, "faulty", host.LaunchOptions{Logger: slog.New(rec), Config: map[string]any{"mode": "levels"}})
	if _, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("levels.example.com")}); err != nil {
		t.Fatal(err)
	}
	p.Close() // flushes stderr
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := map[string]struct {
		level slog.Level
		attrs string
	}{
		"at debug": {slog.LevelDebug, "count=3 domain=levels.example.com"},
		"at info":  {slog.LevelInfo, "domain=levels.example.com took=1.5s"},
		"at warn":  {slog.LevelWarn, "domain=levels.example.com"},
		"at error": {slog.LevelError, "domain=levels.example.com"},
	}
	seen := 0
	for _, r := range rec.records {
		var plugins []string
		var attrs []string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "plugin":
				plugins = append(plugins, a.Value.String())
			case "timestamp":
				t.Errorf("record %q has timestamp=%v", r.Message, a.Value)
			default:
				attrs = append(attrs, a.Key+"="+fmt.Sprint(a.Value.Any()))
			}
			return true
		})
		if len(plugins) != 1 || plugins[0] != "faulty" {
			t.Errorf("record %q has plugin attributes %q, want [faulty]", r.Message, plugins)
		}
		if r.Time.Before(start) || time.Since(r.Time) > time.Minute {
			t.Errorf("record %q has time %v, want the time it arrived", r.Message, r.Time)
		}
		w, ok := want[r.Message]
		if !ok {
			continue
		}
		seen++
		slices.Sort(attrs)
		if got := strings.Join(attrs, " "); r.Level != w.level || got != w.attrs {
			t.Errorf("record %q: level %v, attributes %s; want %v, %s", r.Message, r.Level, got, w.level, w.attrs)
		}
	}
	if seen != len(want) {
		t.Errorf("saw %d of the plugin's %d records among %d", seen, len(want), len(rec.records))
	}
}

// TestConcurrentCalls: one process serves many challenges at once.
func TestConcurrentCalls(t *testing.T) {
	p := launch(t, "faulty", host.LaunchOptions{Config: map[string]any{"mode": "ok"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			c := challenge(fmt.Sprintf("c%d.example.com", i))
			if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
				errs <- err
			}
			if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkLaunch starts, configures and stops a plugin, and reports the
// CPU time each launch costs the host (host-cpu-ms/op) and the plugin
// process (plugin-cpu-ms/op, its own mutual TLS key included).
func BenchmarkLaunch(b *testing.B) {
	self, children := cpu(syscall.RUSAGE_SELF), cpu(syscall.RUSAGE_CHILDREN)
	for b.Loop() {
		p, err := host.Launch(context.Background(), host.LaunchOptions{Name: "faulty", Path: bin["faulty"], Config: map[string]any{"mode": "ok"}})
		if err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
	b.ReportMetric(float64(cpu(syscall.RUSAGE_SELF)-self)/float64(b.N)/1e6, "host-cpu-ms/op")
	b.ReportMetric(float64(cpu(syscall.RUSAGE_CHILDREN)-children)/float64(b.N)/1e6, "plugin-cpu-ms/op")
}

// cpu returns the user and system CPU time of who, in nanoseconds.
func cpu(who int) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func BenchmarkPresentCleanUp(b *testing.B) {
	p := launch(b, "faulty", host.LaunchOptions{Config: map[string]any{"mode": ""}})
	ctx := context.Background()
	c := challenge("bench.example.com")
	for b.Loop() {
		if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
			b.Fatal(err)
		}
		if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNeverStarted: a plugin path that is missing, not executable or a
// directory gives one error naming the plugin and the path, matching
// CheckExecutable's, and nothing in the log (no "failed to exit
// gracefully" for a process that never ran).
func TestNeverStarted(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
		wantIs           error
	}{
		{"missing", filepath.Join(dir, "gone"), "no such file or directory", os.ErrNotExist},
		{"not executable", plain, "host: not an executable file (mode 0644)", host.ErrNotExecutable},
		{"directory", dir, "host: not an executable file (a directory)", host.ErrNotExecutable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			_, err := host.Launch(context.Background(), host.LaunchOptions{Name: "py", Path: tt.path, Logger: slog.New(rec)})
			if err == nil || !strings.HasPrefix(err.Error(), "plugin py: starting "+tt.path+": ") || !strings.HasSuffix(err.Error(), tt.want) || !errors.Is(err, tt.wantIs) {
				t.Errorf("Launch = %v, want %q ending %q, errors.Is %v", err, "plugin py: starting "+tt.path, tt.want, tt.wantIs)
			}
			if strings.Count(err.Error(), tt.path) != 1 {
				t.Errorf("Launch = %v, want the path named once", err)
			}
			if cerr := host.CheckExecutable(tt.path); cerr == nil || cerr.Error() != tt.path+": "+tt.want || !errors.Is(cerr, tt.wantIs) {
				t.Errorf("CheckExecutable = %v, want %q", cerr, tt.path+": "+tt.want)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, r := range rec.records {
				if r.Level >= slog.LevelWarn {
					t.Errorf("logged %v %q for a plugin that never started", r.Level, r.Message)
				}
			}
		})
	}
}

// TestNoHandshake: a plugin that runs but exits, or prints something
// else, before the handshake gives one short error naming the plugin, the
// path and what happened instead, and the log says how it exited without
// a "failed to exit gracefully" warning (it was never up to be asked to
// exit).
func TestNoHandshake(t *testing.T) {
	for _, tt := range []struct{ name, script, want string }{
		{"exits", "echo 'no handshake here' >&2\nexit 3", "the process exited (exit status 3) first"},
		{"prints", "echo 'hello, I am a shell script'\nsleep 10", `the process printed "hello, I am a shell script" instead`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "py")
			if err := os.WriteFile(path, []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			start := time.Now()
			_, err := host.Launch(context.Background(), host.LaunchOptions{Name: "py", Path: path, Logger: slog.New(rec)})
			if want := "plugin py: starting " + path + ": host: no plugin handshake: " + tt.want; err == nil || err.Error() != want || !errors.Is(err, host.ErrNoHandshake) {
				t.Fatalf("Launch = %v, want %q", err, want)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Launch took %s", took)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var exited bool
			for _, r := range rec.records {
				switch {
				case r.Message == "plugin failed to exit gracefully":
					t.Errorf("logged %v %q for a plugin that never came up", r.Level, r.Message)
				case r.Message == "plugin process exited":
					exited = true
				}
			}
			if !exited {
				t.Errorf("no record of the plugin's exit in %d records", len(rec.records))
			}
		})
	}
}

// TestSecretsRedacted: a secret value the plugin echoes in its error and
// its log is replaced before either reaches the host's caller or log.
func TestSecretsRedacted(t *testing.T) {
	const secret = "tok-7f3a9c-very-secret"
	var logs sdktest.LogBuffer
	p := launch(t, "faulty", host.LaunchOptions{Config: map[string]any{"mode": "secret", "token": secret}, Secrets: []string{secret, "x"},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	_, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com")})
	if want := `plugin faulty: present example.com: API refused token "[redacted]"`; err == nil || err.Error() != want {
		t.Errorf("Present = %v, want %q", err, want)
	}
	p.Close() // flushes the log
	if out := logs.String(); strings.Contains(out, secret) || !strings.Contains(out, "calling the API with token [redacted]") {
		t.Errorf("host log %s: want the token redacted", out)
	}
}

// TestHugeOutputsBounded: a plugin that answers Info with a 200 MB name (a
// plugin ignoring any limit) gets an error and costs the host little; a
// 64 MiB log line and stdout line are logged cut, once each.
func TestHugeOutputsBounded(t *testing.T) {
	t.Run("info", func(t *testing.T) {
		p := launch(t, "bare", host.LaunchOptions{Env: []string{"BARE_NAME_BYTES=200000000"}})
		var err error
		if grew := peakRSSGrowth(t, func() { _, err = p.Info(context.Background(), &host.InfoRequest{}) }); grew > 32<<20 {
			t.Errorf("the host's peak RSS grew %d MiB for a refused 200 MB reply", grew>>20)
		}
		if err == nil || !strings.Contains(err.Error(), "larger than max") {
			t.Errorf("Info = %v, want the message size limit", err)
		}
	})
	t.Run("log", func(t *testing.T) {
		var logs sdktest.LogBuffer
		p := launch(t, "faulty", host.LaunchOptions{Config: map[string]any{"mode": "biglog", "bytes": 64 << 20},
			Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		var err error
		grew := peakRSSGrowth(t, func() {
			_, err = p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com")})
			// The stdout line travels over go-plugin's stdio stream after
			// Present has returned.
			for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), `"cut_bytes":`) && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			p.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		if grew > 32<<20 {
			t.Errorf("the host's peak RSS grew %d MiB relaying 2 x 64 MiB of output", grew>>20)
		}
		if n := len(logs.String()); n > 256<<10 {
			t.Errorf("the host logged %d KiB for two 64 MiB lines", n>>10)
		}
		if !strings.Contains(logs.String(), `"cut_bytes":`) || !strings.Contains(logs.String(), "a line longer than 64 KiB, cut") {
			t.Errorf("no cut stdout line (cut_bytes) and cut log record in %d bytes: %s", len(logs.String()), regexp.MustCompile(`x{20,}`).ReplaceAllString(logs.String(), "x..."))
		}
	})
}

// peakRSSGrowth returns how far this process's peak resident set grew
// above its resident set while f ran (Linux: the peak is reset through
// /proc/self/clear_refs first).
func peakRSSGrowth(t *testing.T, f func()) uint64 {
	t.Helper()
	runtime.GC()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	before := procStatus(t, "VmRSS")
	f()
	return max(procStatus(t, "VmHWM"), before) - before
}

// procStatus returns a field of /proc/self/status in bytes.
func procStatus(t *testing.T, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestPluginsDieWithHost: when the host is killed with SIGKILL in the
// middle of a call, every plugin process it started is gone and the port a
// plugin listened on is free again. Measured from the host's death (its
// exit reaped): on an idle machine about 10 ms, well within the second the
// issue asks; the test allows 5 s so that a machine loaded by other tests
// does not fail it, and logs the figure.
func TestPluginsDieWithHost(t *testing.T) {
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin["killhost"], bin["faulty"], bin["standalone"], strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("host printed %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			cmd.Process.Kill()
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the host did not get ready")
	}
	plugins := children(t, cmd.Process.Pid)
	if len(plugins) != 2 {
		cmd.Process.Kill()
		t.Fatalf("host has children %v, want its 2 plugins", plugins)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	// A killed multi-threaded process shows as a zombie while its other
	// threads still exit, so the port is polled as well: both within
	// dieBound.
	const dieBound = 5 * time.Second
	portFree := func() bool {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			ln.Close()
		}
		return err == nil
	}
	for {
		var running []int
		for _, pid := range plugins {
			if alive(pid) {
				running = append(running, pid)
			}
		}
		free := portFree()
		if len(running) == 0 && free {
			break
		}
		if time.Since(killed) > dieBound {
			for _, pid := range running {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("%v after the host was killed: plugins %v still running, port %d free: %v", time.Since(killed), running, port, free)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("plugins gone and port free %v after the host was killed", time.Since(killed).Round(time.Millisecond))
}

// children returns the process ids whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
			out = append(out, child)
		}
	}
	return out
}

// alive reports whether pid has not exited (a zombie counts as exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestSolver: the plugin-backed acme.Solver offers what the plugin solves
// for an identifier, runs the caller's checks after the plugin's Present
// and its cleanup hooks after the plugin's CleanUp, and a failing check
// ends Present with its error.
func TestSolver(t *testing.T) {
	ctx := context.Background()
	p := launch(t, "faulty", host.LaunchOptions{Config: map[string]any{"mode": "ok"}})
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	types := []struct {
		id   acme.Identifier
		want []string
	}{
		{acme.DNS("example.com"), []string{"http-01"}},
		{acme.DNS("*.example.com"), nil}, // a wildcard needs dns-01
		{acme.IP(netip.MustParseAddr("192.0.2.1")), nil},
	}
	for _, tt := range types {
		s := &host.Solver{Plugin: p, Info: info}
		if got, err := s.ChallengeTypes(ctx, tt.id); err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ChallengeTypes(%s) = %q, %v, want %q", tt.id.Value, got, err, tt.want)
		}
	}
	task, err := host.SyntheticTask(acme.DNS("solver.example.com"), "http-01")
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	step := func(name string, err error) host.Hook {
		return func(_ context.Context, c sdk.Challenge) error {
			steps = append(steps, name+" "+c.Identifier.Value)
			return err
		}
	}
	veto := errors.New("self-check failed")
	s := &host.Solver{Plugin: p, Info: info,
		Checks:   []host.Hook{step("script", nil), step("self-check", veto), step("never", nil)},
		CleanUps: []host.Hook{step("cleanup-script", nil)}}
	if err := s.Present(ctx, task); !errors.Is(err, veto) {
		t.Errorf("Present = %v, want the check's error", err)
	}
	if err := s.CleanUp(ctx, task); err != nil {
		t.Errorf("CleanUp = %v", err)
	}
	want := []string{"script solver.example.com", "self-check solver.example.com", "cleanup-script solver.example.com"}
	if !slices.Equal(steps, want) {
		t.Errorf("steps = %q, want %q", steps, want)
	}
}

// TestCallSlots: with MaxCalls 1 a second call waits for the first; a call
// that cannot get a slot within its ctx says so; CallTimeout bounds a call
// from the moment it has its slot.
func TestCallSlots(t *testing.T) {
	p := launch(t, "faulty", host.LaunchOptions{MaxCalls: 1, CallTimeout: 500 * time.Millisecond, Config: map[string]any{"mode": "hang"}})
	first := make(chan error, 1)
	go func() {
		_, err := p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("first.example.com")})
		first <- err
	}()
	time.Sleep(100 * time.Millisecond) // the first call holds the slot
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := p.Present(ctx, &sdk.PresentRequest{Challenge: challenge("second.example.com")})
	if want := "plugin faulty: present second.example.com: waiting for one of its 1 call slots (max_calls): context deadline exceeded"; err == nil || err.Error() != want {
		t.Errorf("second Present = %v, want %q", err, want)
	}
	if err := <-first; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("first Present = %v, want CallTimeout's deadline", err)
	}
}
