package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
)

// families parses Prometheus text exposition with the real parser.
func families(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	return mfs
}

// value returns the value of the series of family name whose labels
// include want ("k=v" pairs), and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// sum adds the values of every series of family name whose labels include
// want.
func sum(mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	total := 0.0
	mf := mfs[name]
	if mf == nil {
		return 0
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				continue next
			}
		}
		total += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	return total
}

// freeAddr returns a loopback address nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// checkCertificateMetrics checks that mfs reports name's stored
// certificate leaf: its not-after, a next renewal before it, a successful
// last result and no failure, hold or pending deploy.
func checkCertificateMetrics(t *testing.T, mfs map[string]*dto.MetricFamily, name string, leaf *x509.Certificate) {
	t.Helper()
	c := "certificate=" + name
	if got, ok := value(mfs, "acmehook_certificate_not_after_timestamp_seconds", c); !ok || int64(got) != leaf.NotAfter.Unix() {
		t.Errorf("%s not-after = %v (present %v), want the stored certificate's %d (%s)", name, got, ok, leaf.NotAfter.Unix(), leaf.NotAfter)
	}
	if got, ok := value(mfs, "acmehook_certificate_next_renewal_timestamp_seconds", c); !ok || got <= float64(time.Now().Unix()) || got >= float64(leaf.NotAfter.Unix()) {
		t.Errorf("%s next renewal = %v (present %v), want between now and not-after %d", name, got, ok, leaf.NotAfter.Unix())
	}
	for _, want := range []struct {
		name   string
		labels []string
		v      float64
	}{
		{"acmehook_certificate_last_result", []string{c, "result=success"}, 1},
		{"acmehook_certificate_last_result", []string{c, "result=failure"}, 0},
		{"acmehook_certificate_consecutive_failures", []string{c}, 0},
		{"acmehook_certificate_held", []string{c, "reason=backoff"}, 0},
		{"acmehook_certificate_held", []string{c, "reason=guard"}, 0},
		{"acmehook_certificate_deploy_pending", []string{c}, 0},
		{"acmehook_certificate_state_error", []string{c}, 0},
	} {
		if got, ok := value(mfs, want.name, want.labels...); !ok || got != want.v {
			t.Errorf("%s%v = %v (present %v), want %v", want.name, want.labels, got, ok, want.v)
		}
	}
}

// TestE2EMetrics runs "acmehook daemon" with [metrics] listen: /healthz
// answers, /metrics parses with Prometheus's text parser while an
// issuance is in flight (held at the CA's validation) and after it, and
// then reports the stored certificate's not-after and the ACME requests,
// orders, plugin calls and script handlers it took; /readyz is 200, then
// 503 naming the plugin while its process is killed, and 200 again once
// the next cycle launched it again. "run --metrics-file" writes a file
// the parser accepts with the same per-certificate values.
func TestE2EMetrics(t *testing.T) {
	s := newSite(t)
	addr := freeAddr(t)
	host := "metrics.daemon.example.com"
	s.write(fmt.Sprintf("[metrics]\nlisten = %q\n\n[[certificate]]\nname = \"web\"\ndomains = [%q]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\nself_check = false\n", addr, host))
	hd := holds.hold(t, host)
	defer hd.Release()
	cmd := s.command("daemon", "--log-level", "debug")
	var out sdktest.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the daemon did not stop")
		}
	}()
	base := "http://" + addr
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: %s", resp.Status)
		}
		return families(t, resp.Body)
	}
	waitFor(t, "/healthz", func() bool { code, _ := get("/healthz"); return code == 200 }, &out)

	// During the issuance: the validation is held at the CA.
	if !hd.Arrived() {
		t.Fatalf("the validation never arrived; daemon log:\n%s", &out)
	}
	// The challenge answer is counted when its response arrives, which can
	// be after the CA's validation request (held here) arrived.
	var during map[string]*dto.MetricFamily
	waitFor(t, "the challenge answer to be counted", func() bool {
		during = scrape()
		return sum(during, "acmehook_acme_requests_total", "endpoint=challenge") >= 1
	}, &out)
	if _, ok := value(during, "acmehook_certificate_not_after_timestamp_seconds", "certificate=web"); ok {
		t.Error("not-after reported before any certificate was stored")
	}
	for _, ep := range []string{"directory", "newNonce", "newAccount", "newOrder", "authz", "challenge"} {
		if n := sum(during, "acmehook_acme_requests_total", "endpoint="+ep); n < 1 {
			t.Errorf("during the issuance: %v requests to %s, want at least 1", n, ep)
		}
	}
	if n, _ := value(during, "acmehook_plugin_calls_total", "plugin=webroot", "method=present", "result=success"); n != 1 {
		t.Errorf("during the issuance: %v successful webroot present calls, want 1", n)
	}
	if n, _ := value(during, "acmehook_certificates"); n != 1 {
		t.Errorf("acmehook_certificates = %v, want 1", n)
	}
	hd.Release()

	waitFor(t, "the certificate", func() bool {
		_, err := os.Stat(filepath.Join(s.work.Events, "web.issued.json"))
		return err == nil
	}, &out)
	leaf, _ := s.stored("web", []string{host})
	waitFor(t, "the daemon to sleep", func() bool { return strings.Contains(out.String(), "msg=\"next check\"") }, &out)
	after := scrape()
	checkCertificateMetrics(t, after, "web", leaf)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"acmehook_orders_total", []string{"result=success"}, 1},
		{"acmehook_acme_requests_total", []string{"endpoint=finalize", "status=200"}, 1},
		{"acmehook_acme_requests_total", []string{"endpoint=certificate", "status=200"}, 1},
		{"acmehook_acme_request_duration_seconds", []string{"endpoint=newOrder"}, 1},
		{"acmehook_plugin_calls_total", []string{"plugin=webroot", "method=cleanup", "result=success"}, 1},
		{"acmehook_plugin_call_duration_seconds", []string{"plugin=webroot", "method=present"}, 1},
		{"acmehook_script_handlers_total", []string{"event=issued", "result=success"}, 1},
		{"acmehook_script_handler_duration_seconds", []string{"event=challenge-provision"}, 1},
		{"acmehook_runs_total", []string{"result=success"}, 1},
	} {
		if got := sum(after, c.name, c.labels...); got < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, got, c.min)
		}
	}
	if got, _ := value(after, "acmehook_orders_total", "result=failure"); got != 0 {
		t.Errorf("failed orders = %v, want 0", got)
	}
	if got, ok := value(after, "acmehook_last_successful_run_timestamp_seconds"); !ok || got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last successful run = %v, want within the last minute", got)
	}
	// Pebble asks for a nonce again after a badNonce now and then; any
	// other problem would be a failure here.
	for _, m := range after["acmehook_acme_problems_total"].GetMetric() {
		if l := m.GetLabel()[0].GetValue(); l != "badNonce" {
			t.Errorf("problem %s counted %v times in a clean issuance", l, m.GetCounter().GetValue())
		}
	}

	// Readiness follows the plugin's process.
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}
	pid := childPID(t, cmd.Process.Pid, "webroot")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz to fail", func() bool {
		code, body := get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "plugin webroot is not running")
	}, &out)
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d while a plugin is down, want 200 (the process is alive)", code)
	}

	// The same values from run --metrics-file (the daemon holds the
	// storage lock: stop it first).
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not stop; log:\n%s", &out)
	}
	exited <- nil // for the deferred stop
	file := filepath.Join(t.TempDir(), "acmehook.prom")
	if o := s.acmehook("run", "--metrics-file", file); o.code != 0 {
		t.Fatalf("run --metrics-file: %s", o)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, _ := f.Stat(); fi.Mode().Perm() != 0o644 {
		t.Errorf("metrics file mode %04o, want 0644 (node_exporter reads it)", fi.Mode().Perm())
	}
	fromFile := families(t, f)
	checkCertificateMetrics(t, fromFile, "web", leaf)
	if got, _ := value(fromFile, "acmehook_runs_total", "result=success"); got != 1 {
		t.Errorf("runs in the file = %v, want 1", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*")); len(left) != 0 {
		t.Errorf("temporary files left beside the metrics file: %v", left)
	}
}

// childPID returns the pid of the child of parent whose command line
// contains substr.
func childPID(t *testing.T, parent int, substr string) int {
	t.Helper()
	// A child belongs to the thread that started it: read every thread's.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", parent))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("listing the threads of %d: %v", parent, err)
	}
	var b []byte
	for _, task := range tasks {
		c, _ := os.ReadFile(task)
		b = append(append(b, c...), ' ')
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cl), substr) {
			return pid
		}
	}
	t.Fatalf("no child of %d runs %s (children: %s)", parent, substr, b)
	return 0
}
