package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// binary is this plugin and hook the test DNS program, built by TestMain;
// pebble is the package's CA and DNS server.
var (
	binary, hook string
	pebble       *pebbletest.Server
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "dnsexec-plugin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if binary, err = sdktest.Build(dir, "dnsexec", "."); err == nil {
			hook, err = sdktest.Build(dir, "hook", "./testdata/hook")
		}
		if err == nil {
			pebble, err = pebbletest.New(pebbletest.Options{})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pebble.Close()
		return m.Run()
	}()
	os.Exit(code)
}

type run struct {
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Cwd     string   `json:"cwd"`
	Running int      `json:"running"`
}

// fixture is one launched plugin with its program's record file.
type fixture struct {
	p       *host.Plugin
	record  string
	pidFile string
	logs    *sdktest.LogBuffer
}

func launch(t *testing.T, mode string, extra map[string]any) *fixture {
	t.Helper()
	return launchWith(t, mode, extra, host.LaunchOptions{})
}

// launchWith launches the plugin with opts (Name, Path, Config and Logger
// set here) and the test program configured for mode, plus extra keys.
func launchWith(t *testing.T, mode string, extra map[string]any, opts host.LaunchOptions) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{record: filepath.Join(dir, "record"), pidFile: filepath.Join(dir, "pid"), logs: &sdktest.LogBuffer{}}
	cfg := map[string]any{
		"program": hook,
		"env": map[string]any{
			"TESTHOOK_API":     pebble.DNSManagementURL,
			"TESTHOOK_RECORD":  f.record,
			"TESTHOOK_MODE":    mode,
			"TESTHOOK_PIDFILE": f.pidFile,
		},
		"resolvers":            []any{pebble.DNSAddr},
		"propagation_interval": "50ms",
		"propagation_timeout":  "5s",
		"timeout":              "5s",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	opts.Name, opts.Path, opts.Config = "dnsexec", binary, cfg
	opts.Logger = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.p, err = host.Launch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.p.Close() })
	return f
}

// runs returns the program's runs so far.
func (f *fixture) runs(t *testing.T) []run {
	t.Helper()
	b, err := os.ReadFile(f.record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []run
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func challenge(domain string) sdk.Challenge {
	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	keyAuth := token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	return sdk.Challenge{
		Type:             "dns-01",
		Identifier:       sdk.Identifier{Type: "dns", Value: domain},
		Token:            token,
		KeyAuthorization: keyAuth,
		DNS01RecordName:  acme.DNS01TXTRecordName(domain) + ".",
		DNS01RecordValue: acme.DNS01TXTRecord(keyAuth),
	}
}

func txt(t *testing.T, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, pebble.DNSAddr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rr := range r.Answer {
		if tx, ok := rr.(*dns.TXT); ok && tx.Hdr.Name == name {
			out = append(out, strings.Join(tx.Txt, ""))
		}
	}
	return out
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPresentWaitCleanUp(t *testing.T) {
	tests := []struct {
		name, domain, cname, wantFQDN string
	}{
		{name: "direct", domain: "direct.example.com", wantFQDN: "_acme-challenge.direct.example.com."},
		{name: "CNAME delegation", domain: "cname.example.com", cname: "_acme-challenge.cname.example.com.",
			wantFQDN: "cname-example-com.acme.delegated.example.net."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cname != "" {
				pebble.DNS.AddDNSCNAMERecord(tt.cname, tt.wantFQDN)
				defer pebble.DNS.DeleteDNSCNAMERecord(tt.cname)
			}
			f := launch(t, "ok", nil)
			c := challenge(tt.domain)
			if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err != nil {
				t.Fatalf("Present = %v", err)
			}
			if got := txt(t, tt.wantFQDN); !slices.Equal(got, []string{c.DNS01RecordValue}) {
				t.Errorf("TXT %s after Present = %q, want [%q]", tt.wantFQDN, got, c.DNS01RecordValue)
			}
			if _, err := f.p.Wait(ctx(t), &sdk.WaitRequest{Challenge: c}); err != nil {
				t.Errorf("Wait = %v", err)
			}
			if _, err := f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c}); err != nil {
				t.Fatalf("CleanUp = %v", err)
			}
			if got := txt(t, tt.wantFQDN); len(got) != 0 {
				t.Errorf("TXT %s after CleanUp = %q, want none", tt.wantFQDN, got)
			}

			runs := f.runs(t)
			if len(runs) != 2 {
				t.Fatalf("program ran %d times, want 2", len(runs))
			}
			for i, action := range []string{"present", "cleanup"} {
				if want := []string{action, tt.wantFQDN, c.DNS01RecordValue}; !slices.Equal(runs[i].Args, want) {
					t.Errorf("run %d args = %q, want %q", i, runs[i].Args, want)
				}
			}
			env := runs[0].Env
			for _, want := range []string{"ACMEHOOK_ACTION=present", "ACMEHOOK_DOMAIN=" + tt.domain, "ACMEHOOK_WILDCARD=false",
				"ACMEHOOK_RECORD_NAME=" + tt.wantFQDN, "ACMEHOOK_RECORD_VALUE=" + c.DNS01RecordValue,
				"ACMEHOOK_TOKEN=" + c.Token, "ACMEHOOK_KEY_AUTHORIZATION=" + c.KeyAuthorization} {
				if !slices.Contains(env, want) {
					t.Errorf("program environment lacks %s", want)
				}
			}
			for _, kv := range env {
				name, _, _ := strings.Cut(kv, "=")
				if !strings.HasPrefix(name, "ACMEHOOK_") && !strings.HasPrefix(name, "TESTHOOK_") && name != "PATH" && name != "HOME" && name != "TMPDIR" || name == "ACMEHOOK_PLUGIN" {
					t.Errorf("program environment has %s, want only PATH, HOME, TMPDIR, the env table and ACMEHOOK_*", name)
				}
			}
		})
	}
}

// TestProgramEnvironment: variables acmehook passes to the plugin (its
// configuration's env names) reach the program, the env table wins over
// them, and go-plugin's handshake variables stay out.
func TestProgramEnvironment(t *testing.T) {
	f := launchWith(t, "ok", nil, host.LaunchOptions{Env: []string{"CHALLTESTSRV_URL=http://127.0.0.1:8055", "TESTHOOK_MODE=fail"}})
	c := challenge("env.example.com")
	if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v (TESTHOOK_MODE=fail from the host must lose to the env table's ok)", err)
	}
	defer f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c})
	runs := f.runs(t)
	if len(runs) != 1 {
		t.Fatalf("program ran %d times, want 1", len(runs))
	}
	env := runs[0].Env
	for _, want := range []string{"CHALLTESTSRV_URL=http://127.0.0.1:8055", "TESTHOOK_MODE=ok", "ACMEHOOK_ACTION=present", "PATH=" + os.Getenv("PATH")} {
		if !slices.Contains(env, want) {
			t.Errorf("program environment lacks %s: %q", want, env)
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "PLUGIN_") || strings.HasPrefix(kv, "ACMEHOOK_PLUGIN=") || kv == "TESTHOOK_MODE=fail" {
			t.Errorf("program environment has %.40s", kv)
		}
	}
}

// TestRelativeProgram: a relative program is found in LaunchOptions.Dir,
// the plugin's working directory.
func TestRelativeProgram(t *testing.T) {
	f := launchWith(t, "ok", map[string]any{"program": filepath.Base(hook)}, host.LaunchOptions{Dir: filepath.Dir(hook)})
	c := challenge("relative.example.com")
	if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v", err)
	}
	defer f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c})
	if runs := f.runs(t); len(runs) != 1 || runs[0].Args[0] != "present" {
		t.Errorf("program runs = %+v, want one present", runs)
	}
	if got := txt(t, c.DNS01RecordName); !slices.Equal(got, []string{c.DNS01RecordValue}) {
		t.Errorf("TXT %s after Present = %q, want [%q]", c.DNS01RecordName, got, c.DNS01RecordValue)
	}
}

func TestWaitTimesOut(t *testing.T) {
	f := launch(t, "ok", map[string]any{"propagation_timeout": "300ms"})
	_, err := f.p.Wait(ctx(t), &sdk.WaitRequest{Challenge: challenge("never.example.com")})
	want := "plugin dnsexec: wait never.example.com: waiting for TXT _acme-challenge.never.example.com. on " + pebble.DNSAddr + ": context deadline exceeded"
	if err == nil || err.Error() != want {
		t.Errorf("Wait = %v, want %q", err, want)
	}
	f.p.Close() // flushes the plugin's log
	if !strings.Contains(f.logs.String(), `"msg":"TXT record not visible yet"`) {
		t.Errorf("no progress logged while waiting; log:\n%s", f.logs)
	}
}

// TestProgramKilledAtTimeout: the program and the child it started are
// killed as a process group.
func TestProgramKilledAtTimeout(t *testing.T) {
	f := launch(t, "hang", map[string]any{"timeout": "2s"})
	start := time.Now()
	_, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: challenge("hang.example.com")})
	if err == nil || !strings.Contains(err.Error(), "killed: context deadline exceeded") {
		t.Fatalf("Present = %v, want the program killed at its timeout", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Present returned after %v, want about 2s", d)
	}
	b, err := os.ReadFile(f.pidFile)
	if err != nil {
		t.Fatalf("the program did not start its child before the timeout: %v", err)
	}
	pid, _ := strconv.Atoi(string(b))
	deadline := time.Now().Add(3 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d of the program still running after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestProgramFailsWithCappedOutput(t *testing.T) {
	f := launch(t, "fail", map[string]any{"output_limit": 1000})
	_, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: challenge("fail.example.com")})
	want := "plugin dnsexec: present fail.example.com: running " + hook + " present _acme-challenge.fail.example.com.: exit status 2: ..."
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Present = %v, want %q", err, want)
	}
	f.p.Close() // flushes the plugin's log
	var rec struct {
		Output  string `json:"output"`
		Dropped int    `json:"output_dropped_bytes"`
	}
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"program failed"`) {
			json.Unmarshal([]byte(line), &rec)
		}
	}
	if len(rec.Output) != 1000 || !strings.HasPrefix(rec.Output, "boom: provider said no") || rec.Dropped != 100000+23-1000 {
		t.Errorf("logged output %d bytes starting %.30q, dropped %d; want 1000 bytes starting with boom, %d dropped",
			len(rec.Output), rec.Output, rec.Dropped, 100000+23-1000)
	}
}

// TestHostileValues: names and values that are not what dns-01 derives never
// reach the program.
func TestHostileValues(t *testing.T) {
	f := launch(t, "ok", nil)
	mutate := map[string]func(*sdk.Challenge){
		"shell metacharacters": func(c *sdk.Challenge) { c.Identifier.Value = "a.example.com;touch${IFS}/tmp/pwned" },
		"command substitution": func(c *sdk.Challenge) { c.Identifier.Value = "$(id).example.com" },
		"leading dash":         func(c *sdk.Challenge) { c.Identifier.Value = "-rf.example.com" },
		"path":                 func(c *sdk.Challenge) { c.Identifier.Value = "../../etc/passwd" },
		"newline":              func(c *sdk.Challenge) { c.Identifier.Value = "a.example.com\nb.example.com" },
		"space":                func(c *sdk.Challenge) { c.Identifier.Value = "a example.com" },
		"record name mismatch": func(c *sdk.Challenge) { c.DNS01RecordName = "-x._acme-challenge.a.example.com." },
		"record value":         func(c *sdk.Challenge) { c.DNS01RecordValue = "x; rm -rf /" },
		"token":                func(c *sdk.Challenge) { c.Token = "../../x\nAAAAAAAAAAAAAAAAAAAAAAAA" },
		"key authorization":    func(c *sdk.Challenge) { c.KeyAuthorization = c.Token + ".`id`" },
		"http-01":              func(c *sdk.Challenge) { c.Type = "http-01" },
	}
	for name, m := range mutate {
		t.Run(name, func(t *testing.T) {
			c := challenge("a.example.com")
			m(&c)
			if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err == nil {
				t.Error("Present = nil, want error")
			}
			if _, err := f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c}); err == nil {
				t.Error("CleanUp = nil, want error")
			}
			if runs := f.runs(t); len(runs) != 0 {
				t.Errorf("program ran with %q", runs[0].Args)
			}
		})
	}
}

// TestValueWithLeadingDash: a record value may begin with '-' (it is
// base64url); it reaches the program intact as its third argument, never
// as an option, and the record is set and removed.
func TestValueWithLeadingDash(t *testing.T) {
	f := launch(t, "ok", nil)
	c := challenge("dash.example.com")
	c.DNS01RecordValue = "-rf_" + strings.Repeat("A", 39)
	if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v", err)
	}
	if got := txt(t, c.DNS01RecordName); !slices.Equal(got, []string{c.DNS01RecordValue}) {
		t.Errorf("TXT %s after Present = %q, want [%q]", c.DNS01RecordName, got, c.DNS01RecordValue)
	}
	if _, err := f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	if got := txt(t, c.DNS01RecordName); len(got) != 0 {
		t.Errorf("TXT %s after CleanUp = %q, want none", c.DNS01RecordName, got)
	}
	runs := f.runs(t)
	if len(runs) != 2 || !slices.Equal(runs[0].Args, []string{"present", c.DNS01RecordName, c.DNS01RecordValue}) {
		t.Errorf("program runs = %+v, want present %s %s first", runs, c.DNS01RecordName, c.DNS01RecordValue)
	}
}

// TestHostileCNAMETarget: a CNAME on the record name pointing at a name
// that is not a plain DNS name fails the call; neither name reaches the
// program.
func TestHostileCNAMETarget(t *testing.T) {
	f := launch(t, "ok", nil)
	for _, target := range []string{"-rf.example.com.", "a;touch.example.com.", "$(id).example.com."} {
		t.Run(target, func(t *testing.T) {
			c := challenge("evil.example.com")
			pebble.DNS.AddDNSCNAMERecord(c.DNS01RecordName, target)
			defer pebble.DNS.DeleteDNSCNAMERecord(c.DNS01RecordName)
			_, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c})
			if want := "plugin dnsexec: present evil.example.com: CNAME of _acme-challenge.evil.example.com.: dns01: not a valid DNS name"; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Present = %v, want %q", err, want)
			}
			if runs := f.runs(t); len(runs) != 0 {
				t.Errorf("program ran with %q", runs[0].Args)
			}
		})
	}
}

func TestIssueWithPebble(t *testing.T) {
	f := launch(t, "ok", nil)
	c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	ids := []acme.Identifier{acme.DNS("dnsexec.example.com"), acme.DNS("*.dnsexec.example.com")}
	chain, err := sdktest.Issue(ctx(t), c, f.p, acme.ChallengeDNS01, ids)
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain.Certificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain.Certificates[0].Verify(x509.VerifyOptions{Roots: pebble.Roots(t, 0), Intermediates: inter, DNSName: "any.dnsexec.example.com"}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
	if got := txt(t, "_acme-challenge.dnsexec.example.com."); len(got) != 0 {
		t.Errorf("TXT after issuance = %q, want cleaned up", got)
	}
}

// TestMaxCalls: a 20-name dns-01 order through dnsexec runs at most
// max_calls hook programs at once (counted by the programs themselves),
// and every name is presented and cleaned up.
func TestMaxCalls(t *testing.T) {
	for _, maxCalls := range []int{0, 2} { // 0: the default, host.DefaultMaxCalls
		t.Run(fmt.Sprint(maxCalls), func(t *testing.T) {
			f := launchWith(t, "count", nil, host.LaunchOptions{MaxCalls: maxCalls})
			want := maxCalls
			if want == 0 {
				want = host.DefaultMaxCalls
			}
			c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
			var ids []acme.Identifier
			for i := range 20 {
				ids = append(ids, acme.DNS(fmt.Sprintf("n%02d.maxcalls%d.example.com", i, maxCalls)))
			}
			if _, err := sdktest.Issue(ctx(t), c, f.p, acme.ChallengeDNS01, ids); err != nil {
				t.Fatalf("Issue = %v", err)
			}
			most, actions := 0, map[string]int{}
			for _, r := range f.runs(t) {
				most = max(most, r.Running)
				actions[r.Args[0]]++
			}
			if most > want || most < 1 {
				t.Errorf("at most %d hook programs ran at once, want between 1 and max_calls %d", most, want)
			}
			if actions["present"] != 20 || actions["cleanup"] != 20 {
				t.Errorf("program runs = %v, want 20 present and 20 cleanup", actions)
			}
		})
	}
}

// TestProgramRunsInConfigDir: the program's working directory is the
// plugin's, which acmehook sets to its configuration file's directory.
func TestProgramRunsInConfigDir(t *testing.T) {
	dir := t.TempDir()
	f := launchWith(t, "ok", nil, host.LaunchOptions{Dir: dir})
	c := challenge("cwd.example.com")
	if _, err := f.p.Present(ctx(t), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	f.p.CleanUp(ctx(t), &sdk.CleanUpRequest{Challenge: c})
	runs := f.runs(t)
	if len(runs) == 0 || runs[0].Cwd != dir {
		t.Errorf("program ran in %+v, want %s", runs, dir)
	}
}

// BenchmarkOrder20 runs 20-name dns-01 orders through dnsexec (hook
// programs that take 150 ms each) and reports the peak resident memory of
// the plugin's process tree: the plugin and the hook programs running at
// once, at most max_calls of them (the default 4, and 20: one program per
// name, as before max_calls existed).
func BenchmarkOrder20(b *testing.B) {
	for _, maxCalls := range []int{host.DefaultMaxCalls, 20} {
		b.Run(fmt.Sprintf("max_calls=%d", maxCalls), func(b *testing.B) { benchmarkOrder20(b, maxCalls) })
	}
}

func benchmarkOrder20(b *testing.B, maxCalls int) {
	peak := 0
	for i := 0; b.Loop(); i++ {
		f := launchWithB(b, "count", maxCalls)
		c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
		var ids []acme.Identifier
		for j := range 20 {
			ids = append(ids, acme.DNS(fmt.Sprintf("n%02d.bench%d-%d.example.com", j, maxCalls, i)))
		}
		done := make(chan struct{})
		peaks := make(chan int)
		go func() {
			most := 0
			for {
				select {
				case <-done:
					peaks <- most
					return
				case <-time.After(5 * time.Millisecond):
					most = max(most, treeRSS(os.Getpid()))
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := sdktest.Issue(ctx, c, f, acme.ChallengeDNS01, ids)
		cancel()
		close(done)
		peak = max(peak, <-peaks)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-tree-MiB")
}

// launchWithB launches the plugin for a benchmark.
func launchWithB(b *testing.B, mode string, maxCalls int) *host.Plugin {
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "dnsexec", Path: binary, MaxCalls: maxCalls, Config: map[string]any{
		"program":              hook,
		"env":                  map[string]any{"TESTHOOK_API": pebble.DNSManagementURL, "TESTHOOK_RECORD": filepath.Join(dir, "record"), "TESTHOOK_MODE": mode},
		"resolvers":            []any{pebble.DNSAddr},
		"propagation_interval": "50ms",
	}})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// treeRSS is the resident memory of pid's descendants (not pid itself).
func treeRSS(pid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	parent := map[int]int{}
	rss := map[int]int{}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 22 {
			continue
		}
		p, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
		parent[p], _ = strconv.Atoi(fields[1])
		pages, _ := strconv.Atoi(fields[21])
		rss[p] = pages * os.Getpagesize()
	}
	total := 0
	for p := range rss {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				total += rss[p]
				break
			}
		}
	}
	return total
}

// TestProgramDiesWithPlugin: when the plugin is killed (as it is when
// acmehook dies) in the middle of running a program, the program is gone
// within a second. (The program's own children are not: they end when
// they end.)
func TestProgramDiesWithPlugin(t *testing.T) {
	f := launch(t, "hang", nil)
	go f.p.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("orphan.example.com")})
	var plugin, program int
	for deadline := time.Now().Add(5 * time.Second); program == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the program did not start")
		}
		plugin, program = 0, 0
		parents := processParents()
		for pid, ppid := range parents {
			if ppid == os.Getpid() && processExe(pid) == binary {
				plugin = pid
			}
		}
		for pid, ppid := range parents {
			if plugin != 0 && ppid == plugin && processExe(pid) == hook {
				program = pid
			}
		}
	}
	if b, _ := os.ReadFile(f.pidFile); len(b) > 0 {
		child, _ := strconv.Atoi(string(b))
		t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	}
	syscall.Kill(plugin, syscall.SIGKILL)
	killed := time.Now()
	for alive(program) {
		if time.Since(killed) > time.Second {
			syscall.Kill(program, syscall.SIGKILL)
			t.Fatalf("program %d still running %v after the plugin was killed", program, time.Since(killed))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processParents maps every process id to its parent's.
func processParents() map[int]int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	out := map[int]int{}
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 1 {
			pid, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/stat"))
			out[pid], _ = strconv.Atoi(fields[1])
		}
	}
	return out
}

// processExe is the executable of pid.
func processExe(pid int) string {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return exe
}
