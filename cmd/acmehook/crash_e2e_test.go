package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestE2EKilledRunLeavesNoChallenge: acmehook killed with SIGKILL while the
// CA validates: its plugins die with it (issue 15: every plugin process
// gone, the standalone port free), its http-01 file stays in the web root
// (the webroot plugin died before CleanUp), and the next run removes it
// ("challenge files left by a crash are removed by the next run") and
// issues.
func TestE2EKilledRunLeavesNoChallenge(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "killed"
domains = ["killed.crash.example.com"]
solver = "webroot"

[[certificate]]
name = "beside"
domains = ["beside.crash.example.com"]
solver = "standalone"
`)
	dir := filepath.Join(webRoot, ".well-known", "acme-challenge")
	left := func() []string {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	before := left() // another test's, if any
	hd := holds.hold(t, "killed.crash.example.com")
	first := s.command("run")
	var out bytes.Buffer
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	if !hd.Arrived() {
		first.Process.Kill()
		t.Fatalf("no validation request arrived\n%s", &out)
	}
	plugins := []int{childPID(t, first.Process.Pid, bins["webroot"]), childPID(t, first.Process.Pid, bins["standalone"])}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	killed := time.Now()
	// Its plugins die with it: measured from acmehook's reaped death,
	// bounded by 5 s so that a loaded machine does not fail it.
	portFree := func() bool {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.TLSPort)))
		if err == nil {
			ln.Close()
		}
		return err == nil
	}
	for !gone(plugins[0]) || !gone(plugins[1]) || !portFree() {
		if time.Since(killed) > 5*time.Second {
			for _, p := range plugins {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("plugins %v (webroot, standalone) gone %t %t, port %d free %t, 5 s after acmehook was killed",
				plugins, gone(plugins[0]), gone(plugins[1]), pebble.TLSPort, portFree())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("plugins gone and the standalone port free %s after acmehook was killed", time.Since(killed).Round(time.Millisecond))
	hd.Release()
	var crashed []string
	for _, n := range left() {
		if !slices.Contains(before, n) {
			crashed = append(crashed, n)
		}
	}
	if len(crashed) == 0 {
		t.Fatalf("nothing new in %s after the kill: the test does not test the crash", dir)
	}
	t.Logf("left by the killed run: %q", crashed)
	second := s.acmehook("run")
	if second.code != 0 {
		t.Fatalf("run after the kill:\n%s", second)
	}
	s.stored("killed", []string{"killed.crash.example.com"})
	s.stored("beside", []string{"beside.crash.example.com"})
	for _, n := range left() {
		if slices.Contains(crashed, n) {
			t.Errorf("%s still in %s after the next run", n, dir)
		}
	}
}

// gone reports whether pid has exited (a zombie has: its files are closed
// once the last thread is gone, which /proc/PID/task shows).
func gone(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if len(tasks) == 0 {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || bytes.Contains(b, []byte(") Z ")) && len(tasks) <= 1
}
