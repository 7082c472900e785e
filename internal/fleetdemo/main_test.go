package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// build builds acmehook and the standalone plugin into dir.
func build(tb testing.TB, dir string) {
	tb.Helper()
	out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/acmehook/acmehook/cmd/acmehook", "github.com/acmehook/acmehook/plugins/standalone").CombinedOutput()
	if err != nil {
		tb.Fatalf("building: %v\n%s", err, out)
	}
}

// TestFleetDemo runs the demo itself (what make fleet-demo runs) with
// three certificates, so it cannot rot: three daemons issue them with
// validations landing on every node, one is killed, the others issue one
// more.
func TestFleetDemo(t *testing.T) {
	bin := t.TempDir()
	build(t, bin)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := run(ctx, Options{Bin: bin, Dir: dir, Nodes: 3, Members: 3, Certificates: 3,
		LeaseTTL: 2 * time.Second, Concurrency: 4, Random: true}); err != nil {
		for _, n := range []string{"n1", "n2", "n3"} {
			if b, err := os.ReadFile(filepath.Join(dir, n, "daemon.log")); err == nil {
				t.Logf("%s's log:\n%s", n, b)
			}
		}
		t.Fatal(err)
	}
}

// BenchmarkFleet: three daemons (processes) on a 3-member etcd, Pebble
// in this process, 1,000 certificates of one name each (http-01,
// standalone, behind a round-robin front). It reports the wall time to
// issue them all and to deploy them all on every node; the etcd requests
// per certificate (counted by the etcd servers: unary calls, and messages
// received on streams) until every node recorded its deploy of every
// certificate, and the unary ones until all were issued; each daemon's
// peak RSS; and the takeover time after SIGKILL of the node doing the
// work. It fails unless Pebble finalized exactly one order per
// certificate and each node logged exactly one deploy of each. Run it
// with make fleet-bench.
func BenchmarkFleet(b *testing.B) {
	const certs = 1000
	bin := b.TempDir()
	build(b, bin)
	for b.Loop() {
		benchFleet(b, bin, certs)
	}
}

func benchFleet(b *testing.B, bin string, certs int) {
	ctx := context.Background()
	dir := b.TempDir()
	o := Options{Bin: bin, Dir: dir, Nodes: 3, Members: 3, Certificates: certs, LeaseTTL: 5 * time.Second, Concurrency: 32}
	before := etcdRequests(b)
	start := time.Now()
	f, err := Start(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.WaitIssued(ctx, certs, 25*time.Minute); err != nil {
		b.Fatal(err)
	}
	wall := time.Since(start)
	issuedReqs := etcdRequests(b)
	if err := f.WaitDeployed(ctx, len(f.Nodes)*certs, 25*time.Minute); err != nil {
		b.Fatal(err)
	}
	deployWall := time.Since(start)
	after := etcdRequests(b)
	perCert := func(after map[string]float64) (unary, streamed float64, byMethod []string) {
		for k, v := range after {
			d := v - before[k]
			if d == 0 {
				continue
			}
			if strings.HasPrefix(k, "unary ") {
				unary += d
			} else {
				streamed += d
			}
			byMethod = append(byMethod, fmt.Sprintf("%s %.2f", k, d/float64(certs)))
		}
		sort.Strings(byMethod)
		return unary / float64(certs), streamed / float64(certs), byMethod
	}
	issuedUnary, _, _ := perCert(issuedReqs)
	unary, streamed, byMethod := perCert(after)
	// Exactly once: one order finalized per certificate, one deploy per
	// node and certificate.
	acme, _ := f.Pebble.Counter().Snapshot()
	if got := acme["POST /finalize-order/"]; got != certs {
		b.Errorf("Pebble finalized %d orders for %d certificates", got, certs)
	}
	deploys := 0
	for _, n := range f.Nodes {
		deploys += countLines(filepath.Join(n.Dir, "daemon.log"), `msg="certificate deployed"`)
	}
	if deploys != len(f.Nodes)*certs {
		b.Errorf("the daemons logged %d deploys of %d certificates on %d nodes, want one each", deploys, certs, len(f.Nodes))
	}
	var rss []string
	for _, n := range f.Nodes {
		rss = append(rss, fmt.Sprintf("%s %s", n.Name, peakRSS(n.PID())))
	}
	_, holder, err := f.Sessions(ctx)
	if err != nil {
		b.Fatal(err)
	}
	victim := f.Nodes[0]
	if holder != "" {
		victim = f.Node(holder)
	}
	killed := time.Now()
	victim.Kill()
	takeover, err := f.WaitTakeover(ctx, victim.Name, holder == victim.Name, killed, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	counts := f.Front.Counts()
	b.Logf("fleet of 3 daemons, 3 etcd members, %d certificates, %d CPU cores, GOMAXPROCS %d", certs, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	b.Logf("wall time to issue all: %s (%.1f certificates/s); to deploy all on every node: %s", wall.Round(10*time.Millisecond), float64(certs)/wall.Seconds(), deployWall.Round(10*time.Millisecond))
	b.Logf("etcd requests per certificate, issued and deployed on every node: %.1f unary, %.1f stream messages (%s); %.1f unary by the time all were issued", unary, streamed, strings.Join(byMethod, ", "), issuedUnary)
	b.Logf("exactly once: %d orders finalized, %d deploys logged (one per node and certificate)", acme["POST /finalize-order/"], deploys)
	b.Logf("peak RSS per daemon: %s", strings.Join(rss, ", "))
	b.Logf("http-01 connections by node (validations and self-checks): %v", counts)
	b.Logf("takeover after SIGKILL of %s: %s (lease_ttl %s)", victim.Name, takeover.Round(10*time.Millisecond), o.LeaseTTL)
	b.ReportMetric(wall.Seconds(), "s/issue-all")
	b.ReportMetric(deployWall.Seconds(), "s/deploy-all")
	b.ReportMetric(unary, "etcd-unary/cert")
	b.ReportMetric(streamed, "etcd-stream-msgs/cert")
	b.ReportMetric(takeover.Seconds(), "s/takeover")
}

// etcdRequests returns the etcd servers' gRPC counts (in this process's
// default Prometheus registry, where embedded etcd registers them): per
// "unary Service/Method" the calls handled, per "stream Service/Method"
// the messages received.
func etcdRequests(tb testing.TB) map[string]float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "grpc_server_handled_total", "grpc_server_msg_received_total":
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			l := labels(m)
			typ := l["grpc_type"]
			if typ == "unary" && mf.GetName() != "grpc_server_handled_total" || typ != "unary" && mf.GetName() != "grpc_server_msg_received_total" {
				continue
			}
			if typ != "unary" {
				typ = "stream"
			}
			svc := l["grpc_service"][strings.LastIndex(l["grpc_service"], ".")+1:]
			out[typ+" "+svc+"/"+l["grpc_method"]] += m.GetCounter().GetValue()
		}
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// peakRSS is the process's peak resident set (VmHWM), as /proc says.
func peakRSS(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		}
	}
	return "?"
}

// TestFleetDemoDiesWithParent: nothing of the demo's fleet outlives it.
// The demo binary runs with 200 certificates (more than it issues in the
// test's time) until its 3 daemons and their plugins run, then is killed
// with SIGKILL (its daemons get the parent-death signal), or its parent
// is (the demo then gets SIGTERM and stops its fleet as on Ctrl-C).
// Within 10 s no process of the fleet is left.
func TestFleetDemoDiesWithParent(t *testing.T) {
	bin := t.TempDir()
	build(t, bin)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "fleetdemo"), "github.com/acmehook/acmehook/internal/fleetdemo").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		name string
		// viaShell runs the demo under a shell that waits for it; the
		// shell is the process killed.
		viaShell bool
	}{
		{"demo killed", false},
		{"parent killed", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{filepath.Join(bin, "fleetdemo"), "-bin", bin, "-dir", t.TempDir(), "-certificates", "200"}
			if tt.viaShell {
				args = append([]string{"sh", "-c", `"$0" "$@"; echo shell done`}, args...)
			}
			cmd := exec.Command(args[0], args[1:]...)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
				for _, p := range fleetProcesses(bin) {
					syscall.Kill(p, syscall.SIGKILL)
				}
			})
			// The demo, its 3 daemons and their 3 plugins.
			deadline := time.Now().Add(time.Minute)
			for len(fleetProcesses(bin)) < 7 {
				if time.Now().After(deadline) {
					t.Fatalf("%d processes of the fleet run after a minute, want 7 (the demo, 3 daemons, 3 plugins)", len(fleetProcesses(bin)))
				}
				time.Sleep(50 * time.Millisecond)
			}
			running := fleetProcesses(bin)
			// Reaped without closing the demo's output (a closed pipe
			// would kill it with SIGPIPE).
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Process.Wait()
			deadline = time.Now().Add(10 * time.Second)
			for len(fleetProcesses(bin)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("10 s after the kill, processes of the fleet still run: %v (were %v)", fleetProcesses(bin), running)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// fleetProcesses returns the live processes (not zombies) whose
// executable is in dir: the daemons and their plugins, and the demo.
func fleetProcesses(dir string) []int {
	var pids []int
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, exe := range exes {
		target, err := os.Readlink(exe)
		if err != nil || !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(exe)))
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(stat), ") Z ") {
			pids = append(pids, pid)
		}
	}
	return pids
}
