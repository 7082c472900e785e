package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestE2EKilledRunLeavesNoChallenge: acmehook killed with SIGKILL while the
// CA validates leaves its http-01 file in the web root (its webroot plugin
// dies with it, before CleanUp); the next run removes it (issue 15: "challenge
// files left by a crash are removed by the next run") and issues.
func TestE2EKilledRunLeavesNoChallenge(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "killed"
domains = ["killed.crash.example.com"]
solver = "webroot"
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
	hd := holds.hold("killed.crash.example.com")
	first := s.command("run")
	var out bytes.Buffer
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hd.arrived:
	case <-time.After(30 * time.Second):
		first.Process.Kill()
		t.Fatalf("no validation request arrived\n%s", &out)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	close(hd.release)
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
	// Its plugin dies with it (parent-death signal): wait, within 5 s,
	// until no process holds the ledger any more, as the next run finds it.
	for deadline := time.Now().Add(5 * time.Second); openByAny(filepath.Join(dir, crashed[0])) || openByAny(filepath.Join(dir, crashed[len(crashed)-1])); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the killed run's webroot plugin still runs 5 s later")
		}
	}
	second := s.acmehook("run")
	if second.code != 0 {
		t.Fatalf("run after the kill:\n%s", second)
	}
	s.stored("killed", []string{"killed.crash.example.com"})
	for _, n := range left() {
		if slices.Contains(crashed, n) {
			t.Errorf("%s still in %s after the next run", n, dir)
		}
	}
}

// openByAny reports whether any process has path open.
func openByAny(path string) bool {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); target == path {
			return true
		}
	}
	return false
}
