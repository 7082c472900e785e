package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/internal/testetcd"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
)

// TestE2EMigrateToEtcd: a certificate issued on the file storage is copied
// into etcd with `storage migrate --to etcd`; acmehook on etcd then serves
// it without ordering again, list shows it, no private key is readable in
// etcd, the files are left, and nodes lists no live node once the
// commands have exited.
func TestE2EMigrateToEtcd(t *testing.T) {
	s := newSite(t)
	certs := "[[certificate]]\nname = \"mig\"\ndomains = [\"mig.example.com\"]\nsolver = \"webroot\"\n"
	s.write(certs)
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("run on the file storage: %s", o)
	}
	before := s.acmehook("list")

	c := testetcd.Start(t, testetcd.Options{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(s.work.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	storage := fmt.Sprintf(`[storage]
backend = "etcd"
path = "storage"
endpoints = [%q]
node = "n1"
lease_ttl = "5s"
age_recipients = [%q]
age_identity_file = "age.key"

`, c.Endpoints[0], id.Recipient().String())
	s.text = storage + strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		t.Fatal(err)
	}

	o := s.acmehook("storage", "migrate", "--to", "etcd")
	if o.code != 0 || !strings.Contains(o.stdout, "copied and verified") || !strings.Contains(o.stdout, "1 certificates") {
		t.Fatalf("storage migrate: %s", o)
	}
	if _, err := os.Stat(filepath.Join(s.work.Dir, "storage", "certificates", "mig", "current")); err != nil {
		t.Errorf("the file storage lost its certificate: %v", err)
	}

	o = s.acmehook("run")
	if o.code != 0 || strings.Contains(o.stderr, "obtaining certificate") {
		t.Errorf("run on etcd after the migration ordered again or failed: %s", o)
	}
	after := s.acmehook("list")
	if after.code != 0 || after.stdout != before.stdout {
		t.Errorf("list on etcd =\n%s\nwant what it showed on the file storage:\n%s", after, before.stdout)
	}

	resp, err := c.Client(t).Get(t.Context(), "/acmehook/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 10 {
		t.Errorf("etcd holds %d keys after the migration", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd key %s holds a private key in plain text", kv.Key)
		}
	}

	o = s.acmehook("nodes")
	if o.code != 0 || strings.TrimSpace(o.stdout) != "NODE  VERSION  PID  LAST SEEN  CERTIFICATES" {
		t.Errorf("nodes with no daemon running: %s", o)
	}
	if o := s.acmehook("storage", "migrate", "--to", "etcd"); o.code != 1 || !strings.Contains(o.stderr, "empty storage only") {
		t.Errorf("a second migrate: %s", o)
	}
}

// fleetSite writes, for node, a configuration on the etcd cluster c with
// the certificates certs, and returns its path.
func fleetSite(t *testing.T, s *site, c *testetcd.Cluster, id *age.X25519Identity, node, certs string) string {
	t.Helper()
	idFile := filepath.Join(s.work.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("[storage]\nbackend = \"etcd\"\nendpoints = [%q]\nnode = %q\nlease_ttl = \"2s\"\nage_recipients = [%q]\nage_identity_file = \"age.key\"\n\n",
		c.Endpoints[0], node, id.Recipient().String()) +
		strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs
	p := filepath.Join(s.work.Dir, node+".toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestE2EDaemonTakeover: two daemons on one etcd storage — one works, the
// other stands by. Paused (SIGSTOP) past its lease, the worker loses the
// storage to the other, which issues what the worker had not; resumed, the
// old worker notices and stands by. Killed, the new worker's certificates
// are taken over by the first within the lease TTL and a third.
func TestE2EDaemonTakeover(t *testing.T) {
	s := newSite(t)
	c := testetcd.Start(t, testetcd.Options{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cert := func(name string) string {
		return fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [%q]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n", name, name+".fleet.example.com")
	}
	confA := fleetSite(t, s, c, id, "a", cert("one"))
	confB := fleetSite(t, s, c, id, "b", cert("one")+cert("two"))
	type daemon struct {
		cmd *exec.Cmd
		out *sdktest.LogBuffer
	}
	start := func(conf string) daemon {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, bins["acmehook"], "--config", conf, "daemon")
		d := daemon{cmd: cmd, out: &sdktest.LogBuffer{}}
		cmd.Stdout, cmd.Stderr = d.out, d.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
		return d
	}
	logged := func(d daemon, msg string) func() bool {
		return func() bool { return strings.Contains(d.out.String(), msg) }
	}
	issued := func(name string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(s.work.Events, name+".issued.json"))
			return err == nil
		}
	}

	a := start(confA)
	waitFor(t, "a to issue one", issued("one"), a.out)
	b := start(confB)
	waitFor(t, "b to stand by", logged(b, "standing by"), b.out)
	if issued("two")() {
		t.Fatal("the standing-by node issued a certificate")
	}
	o := s.acmehookWith(confA, "nodes")
	if o.code != 0 || !strings.Contains(o.stdout, "all (storage lock)") || !strings.Contains(o.stdout, "\nb ") {
		t.Errorf("nodes with a working and a standing-by daemon:\n%s", o)
	}

	// Pause a past its lease: b takes over and issues two.
	a.cmd.Process.Signal(syscall.SIGSTOP)
	paused := time.Now()
	waitFor(t, "b to take over", logged(b, "holding the storage lock"), b.out)
	t.Logf("takeover after SIGSTOP: %s (lease TTL 2s, retry every 666ms)", time.Since(paused).Round(10*time.Millisecond))
	waitFor(t, "b to issue two", issued("two"), b.out)
	a.cmd.Process.Signal(syscall.SIGCONT)
	waitFor(t, "a to notice it lost the storage", logged(a, "lost the storage lock"), a.out)

	// Kill b: a takes over within the lease TTL plus a retry.
	b.cmd.Process.Kill()
	killed := time.Now()
	waitFor(t, "a to take over again", func() bool { return strings.Count(a.out.String(), "holding the storage lock") >= 2 }, a.out)
	took := time.Since(killed)
	t.Logf("takeover after SIGKILL: %s", took.Round(10*time.Millisecond))
	if took > 2*time.Second+2*time.Second/3+2*time.Second {
		t.Errorf("takeover took %s, want about the lease TTL (2s) and a retry", took)
	}
	if strings.Count(a.out.String(), "obtaining certificate") != 1 {
		t.Errorf("a ordered again after the takeover:\n%s", a.out)
	}
}

// acmehookWith is acmehook with another configuration file.
func (s *site) acmehookWith(conf string, args ...string) outcome {
	s.t.Helper()
	saved := s.config
	defer func() { s.config = saved }()
	s.config = conf
	return s.acmehook(args...)
}
