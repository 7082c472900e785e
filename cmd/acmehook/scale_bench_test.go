package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// BenchmarkScale issues 10,000 certificates (1,000 with -short) in one
// `acmehook run` against Pebble (http-01 through the real webroot plugin,
// really validated, no authorization reuse, PEBBLE_VA_NOSLEEP), then starts
// `acmehook daemon` on that storage and lets it settle, then times
// `acmehook list`. It reports:
//
//   - run-s, requests/cert: the run's wall time and the requests Pebble
//     served per certificate; ca-requests-in-flight: how many Pebble
//     worked on at once, on average over the run;
//   - run-peak-RSS-MiB (rusage Maxrss: the largest of the process and its
//     reaped children, the plugin), run-peak-goroutines, run-peak-fds,
//     run-cpu-s (user+system of acmehook and its plugin);
//   - daemon-start-s: from the daemon's start to its first "next check"
//     (every certificate read and decided once);
//   - daemon-RSS-MiB, daemon-goroutines, daemon-fds and daemon-idle-cpu-%
//     (over 10 s of idle after the start, 3 s with -short);
//   - scrape-ms, scrape-cpu-ms: one GET /metrics ([metrics] listen), which
//     reads every certificate's state;
//   - list-s: one `acmehook list` of every certificate.
//
// Goroutines are counted from the Go runtime's own scheduler trace
// (GODEBUG=schedtrace,scheddetail, which lists every goroutine on
// stderr every 2 s), so acmehook carries no debugging endpoint for it.
//
//	go test -run '^$' -bench Scale -short ./cmd/acmehook/   # 1,000 certificates, ~30 s on an idle machine
//	go test -run '^$' -bench Scale ./cmd/acmehook/          # 10,000 (make bench)
//
// The configuration sets concurrency = 32, what docs/operations.md
// advises for a first issuance of thousands against a private CA (the
// default, 8, stays within public CAs' request rates);
// ACMEHOOK_SCALE_CONCURRENCY=N sets another.
func BenchmarkScale(b *testing.B) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	for range b.N {
		benchmarkScale(b, n)
	}
}

func benchmarkScale(b *testing.B, n int) {
	// Each figure is also printed at once: removing the storage of 10,000
	// certificates when the benchmark ends takes a while.
	report := func(v float64, unit string) {
		b.ReportMetric(v, unit)
		fmt.Fprintf(os.Stderr, "BenchmarkScale %d certificates: %.4g %s\n", n, v, unit)
	}
	s := newSite(b)
	port, err := pebbletest.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	var certs strings.Builder
	fmt.Fprintf(&certs, "[metrics]\nlisten = \"127.0.0.1:%d\"\n\n", port)
	for i := range n {
		fmt.Fprintf(&certs, "[[certificate]]\nname = \"s%05d\"\ndomains = [\"s%05d.scale%d.example.com\"]\nsolver = \"webroot\"\n", i, i, time.Now().UnixNano()%1e6)
	}
	s.write(certs.String())
	c := "32"
	if env := os.Getenv("ACMEHOOK_SCALE_CONCURRENCY"); env != "" {
		if _, err := strconv.Atoi(env); err != nil {
			b.Fatalf("ACMEHOOK_SCALE_CONCURRENCY=%q: %v", env, err)
		}
		c = env
	}
	// A top-level key, before the base configuration's first table.
	s.text = strings.Replace(s.text, "storage = \"storage\"\n", "storage = \"storage\"\nconcurrency = "+c+"\n", 1)
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "BenchmarkScale %d certificates: concurrency %s\n", n, c)

	// One run that issues every certificate.
	pebble.Counter().Reset()
	run := startTraced(b, s, "run")
	if err := run.wait(15 * time.Minute); err != nil {
		b.Fatalf("acmehook run of %d certificates: %v\n%s", n, err, run.tail())
	}
	_, reqs := pebble.Counter().Snapshot()
	inFlight, _ := pebble.Counter().InFlight()
	ru := run.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	report(run.elapsed.Seconds(), "run-s")
	report(float64(reqs)/float64(n), "requests/cert")
	report(inFlight, "ca-requests-in-flight")
	report(float64(ru.Maxrss)/1024, "run-peak-RSS-MiB")
	report(float64(run.peakGoroutines()), "run-peak-goroutines")
	report(float64(run.peakFDs()), "run-peak-fds")
	// wait4's rusage includes the plugin, a reaped child of the run.
	report(time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds(), "run-cpu-s")
	if got := strings.Count(run.stdout.String(), " issued "); got != n {
		b.Fatalf("run issued %d of %d certificates:\n%s", got, n, run.tail())
	}

	// The daemon on that storage: every certificate is current.
	d := startTraced(b, s, "daemon")
	defer d.stop()
	if !d.waitLog(`msg="next check"`, 10*time.Minute) {
		b.Fatalf("the daemon did not finish its first check:\n%s", d.tail())
	}
	report(time.Since(d.start).Seconds(), "daemon-start-s")
	time.Sleep(time.Second) // the first cycle's garbage collected
	idleFor := 10 * time.Second
	if testing.Short() {
		idleFor = 3 * time.Second
	}
	cpu0, t0 := d.cpu(), time.Now()
	time.Sleep(idleFor)
	idle := (d.cpu() - cpu0).Seconds() / time.Since(t0).Seconds()
	report(100*idle, "daemon-idle-cpu-%")
	report(float64(d.rssKiB())/1024, "daemon-RSS-MiB")
	report(float64(d.lastGoroutines()), "daemon-goroutines")
	report(float64(d.fds()), "daemon-fds")
	// One Prometheus scrape reads every certificate's state.
	cpu0, t0 = d.cpu(), time.Now()
	resp, err := http.Get(metricsURL)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || bytes.Count(body, []byte("acmehook_certificate_not_after_timestamp_seconds{")) != n {
		b.Fatalf("GET /metrics: %s %v, %d bytes", resp.Status, err, len(body))
	}
	report(float64(time.Since(t0).Milliseconds()), "scrape-ms")
	report(float64((d.cpu() - cpu0).Milliseconds()), "scrape-cpu-ms")
	d.stop()

	// list reads every certificate.
	start := time.Now()
	o := s.acmehook("list")
	elapsed := time.Since(start)
	if o.code != 0 || strings.Count(o.stdout, "\n") < n {
		b.Fatalf("acmehook list: %s", o)
	}
	report(elapsed.Seconds(), "list-s")
}

// traced is an acmehook process whose scheduler trace and log are read
// as they come, and whose open files are sampled.
type traced struct {
	cmd     *exec.Cmd
	start   time.Time
	elapsed time.Duration
	stdout  bytes.Buffer
	done    chan error

	mu      sync.Mutex
	lines   []string // the last log lines
	logs    map[string]bool
	gs      int // goroutines in the trace being read
	lastGs  int // goroutines in the last complete trace
	maxGs   int
	maxFDs  int
	stopped bool
}

// goroutineLine is a goroutine in the scheduler trace; status 6 is a dead
// one kept for reuse, not counted.
var goroutineLine = regexp.MustCompile(`^\s+G\d+: status=(\d+)`)

// startTraced starts acmehook with args and GODEBUG's scheduler trace.
func startTraced(b *testing.B, s *site, args ...string) *traced {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bins["acmehook"], append([]string{"--config", s.config}, args...)...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GODEBUG=schedtrace=2000,scheddetail=1")
	t := &traced{cmd: cmd, done: make(chan error, 1), logs: map[string]bool{}}
	cmd.Stdout = &t.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	t.start = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	read := make(chan struct{})
	go func() { t.read(stderr); close(read) }()
	go func() {
		<-read
		err := cmd.Wait()
		t.elapsed = time.Since(t.start)
		t.done <- err
	}()
	go t.sample()
	return t
}

func (t *traced) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t.mu.Lock()
		switch {
		case strings.HasPrefix(line, "SCHED "):
			if t.gs > 0 {
				t.lastGs, t.maxGs = t.gs, max(t.maxGs, t.gs)
			}
			t.gs = 0
		case goroutineLine.MatchString(line):
			if goroutineLine.FindStringSubmatch(line)[1] != "6" {
				t.gs++
			}
		case strings.HasPrefix(line, "  P") || strings.HasPrefix(line, "  M"):
		default:
			if i := strings.Index(line, `msg="`); i >= 0 {
				if j := strings.IndexByte(line[i+5:], '"'); j >= 0 {
					t.logs[line[i:i+5+j+1]] = true
				}
			}
			if t.lines = append(t.lines, line); len(t.lines) > 40 {
				t.lines = t.lines[1:]
			}
		}
		t.mu.Unlock()
	}
	t.mu.Lock()
	if t.gs > 0 {
		t.lastGs, t.maxGs = t.gs, max(t.maxGs, t.gs)
	}
	t.mu.Unlock()
}

// sample records the peak of open files every 100 ms.
func (t *traced) sample() {
	for {
		select {
		case err := <-t.done:
			t.done <- err
			return
		case <-time.After(100 * time.Millisecond):
		}
		n := t.fds()
		t.mu.Lock()
		t.maxFDs = max(t.maxFDs, n)
		t.mu.Unlock()
	}
}

func (t *traced) wait(d time.Duration) error {
	select {
	case err := <-t.done:
		t.done <- err
		return err
	case <-time.After(d):
		t.cmd.Process.Kill()
		return fmt.Errorf("still running after %s", d)
	}
}

// waitLog waits until a log line with msg (`msg="..."`) was read.
func (t *traced) waitLog(msg string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		t.mu.Lock()
		ok := t.logs[msg]
		t.mu.Unlock()
		if ok {
			return true
		}
		select {
		case err := <-t.done:
			t.done <- err
			return false
		default:
		}
	}
	return false
}

// stop sends SIGTERM and waits for the exit.
func (t *traced) stop() {
	t.mu.Lock()
	stopped := t.stopped
	t.stopped = true
	t.mu.Unlock()
	if stopped {
		return
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	t.wait(30 * time.Second)
}

func (t *traced) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

func (t *traced) peakGoroutines() int { t.mu.Lock(); defer t.mu.Unlock(); return t.maxGs }
func (t *traced) lastGoroutines() int { t.mu.Lock(); defer t.mu.Unlock(); return t.lastGs }
func (t *traced) peakFDs() int        { t.mu.Lock(); defer t.mu.Unlock(); return t.maxFDs }

func (t *traced) proc(name string) string {
	return filepath.Join("/proc", strconv.Itoa(t.cmd.Process.Pid), name)
}

// fds is the number of files the process has open now.
func (t *traced) fds() int {
	ents, _ := os.ReadDir(t.proc("fd"))
	return len(ents)
}

// cpu is the process's user+system time so far (/proc/PID/stat, in
// clock ticks of 10 ms).
func (t *traced) cpu() time.Duration {
	b, err := os.ReadFile(t.proc("stat"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// rssKiB is the process's resident set now.
func (t *traced) rssKiB() int {
	b, _ := os.ReadFile(t.proc("status"))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}
