package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/testetcd"
)

// cluster is the package's single-member etcd; each test works below a
// prefix of its own.
var cluster *testetcd.Cluster

func TestMain(m *testing.M) {
	c, err := testetcd.New(testetcd.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

// testPrefix returns a prefix no other test uses.
func testPrefix(t testing.TB) string {
	return "/t/" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "/"
}

// logBuffer collects a backend's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// open returns a backend (an independent client and session) on c below
// prefix, closed at the test's cleanup.
func open(t testing.TB, c *testetcd.Cluster, prefix, node string, mod func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Endpoints: c.Endpoints, Prefix: prefix, Node: node, LeaseTTL: time.Second}
	if c.TLS != nil {
		cfg.CAFile, cfg.CertFile, cfg.KeyFile = c.TLS.CA, c.TLS.ClientCert, c.TLS.ClientKey
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestListLarge: listing skips subtrees across pages.
func TestListLarge(t *testing.T) {
	ctx := t.Context()
	b := open(t, cluster, testPrefix(t), "a", nil)
	var want []string
	var ops []store.Op
	for i := range 300 {
		name := fmt.Sprintf("c%03d", i)
		want = append(want, name+"/")
		for j := range 3 {
			ops = append(ops, store.Put(fmt.Sprintf("certificates/%s/versions/v%d/cert.pem", name, j), []byte("x")))
		}
		if len(ops) >= 90 {
			if err := b.Apply(ctx, nil, ops); err != nil {
				t.Fatal(err)
			}
			ops = nil
		}
	}
	if err := b.Apply(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	got, err := b.List(ctx, "certificates/")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
}

// TestLockHolder: a refused Lock names the node that holds it.
func TestLockHolder(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	a := open(t, cluster, prefix, "node-a", nil)
	b := open(t, cluster, prefix, "node-b", nil)
	if _, err := a.Lock(ctx, "certificates/www"); err != nil {
		t.Fatal(err)
	}
	_, err := b.Lock(ctx, "certificates/www")
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "node node-a (pid ") {
		t.Errorf("Lock by another node = %v, want ErrLocked naming node-a", err)
	}
	// A lock named below another's name is a lock of its own.
	if _, err := b.Lock(ctx, "certificates/www/sub"); err != nil {
		t.Errorf("Lock(certificates/www/sub) = %v", err)
	}
}

// TestFencing: a node whose lease expires while it cannot reach etcd (a
// frozen connection, as a paused process or a partition) loses its lock to
// another node; when it comes back its write is refused by the
// transaction's owner compare, logged, and the new owner's value stands.
func TestFencing(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	proxy := testetcd.StartProxy(t, cluster.Members()[0])
	var logs logBuffer
	a := open(t, cluster, prefix, "node-a", func(c *Config) {
		c.Endpoints = []string{proxy.URL}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.RequestTimeout = 30 * time.Second
	})
	b := open(t, cluster, prefix, "node-b", nil)
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, la, []store.Op{store.Put("certificates/www/current", []byte("versions/a1"))}); err != nil {
		t.Fatal(err)
	}

	proxy.Pause()
	start := time.Now()
	var lb store.Lock
	for {
		lb, err = b.Lock(ctx, "certificates/www")
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrLocked) || time.Since(start) > 20*time.Second {
			t.Fatalf("Lock by node-b: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("node-b took the lock %s after node-a went silent (lease TTL %s)", time.Since(start).Round(time.Millisecond), a.LeaseTTL())
	if err := b.Apply(ctx, lb, []store.Op{store.Put("certificates/www/current", []byte("versions/b1"))}); err != nil {
		t.Fatal(err)
	}

	proxy.Resume()
	err = a.Apply(ctx, la, []store.Op{store.Put("certificates/www/current", []byte("versions/a2"))})
	if !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("old owner's Apply = %v, want ErrLockLost", err)
	}
	if v, _ := b.Get(ctx, "certificates/www/current"); string(v) != "versions/b1" {
		t.Errorf("current = %q after the refused write, want versions/b1", v)
	}
	if !strings.Contains(logs.String(), "write refused: lock lost (the transaction's ownership compare failed)") {
		t.Errorf("old owner's log does not record the refused write:\n%s", logs.String())
	}
	select {
	case <-la.Done():
	case <-time.After(10 * time.Second):
		t.Error("the old owner's lock is not Done after its lease expired")
	}
	// The old owner carries on with a new session.
	if _, err := a.Lock(ctx, "certificates/other"); err != nil {
		t.Errorf("Lock on a new session: %v", err)
	}
}

func TestReadOnly(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	w := open(t, cluster, prefix, "w", nil)
	if err := w.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	r := open(t, cluster, prefix, "r", func(c *Config) { c.ReadOnly = true })
	if v, err := r.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("Get = %q, %v", v, err)
	}
	if err := r.Put(ctx, "k", nil); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Put = %v, want ErrReadOnly", err)
	}
	if _, err := r.Lock(ctx, "l"); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Lock = %v, want ErrReadOnly", err)
	}
}

// TestTLSAndAuth: client certificates and a username/password reach a
// cluster that requires both; a wrong password is a clear error at Open.
func TestTLSAndAuth(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{TLS: true})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.EnableAuth(ctx, "s3cret"); err != nil {
		t.Fatal(err)
	}
	b := open(t, c, DefaultPrefix, "a", func(cfg *Config) { cfg.Username, cfg.Password = "root", "s3cret" })
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Endpoints: c.Endpoints, CAFile: c.TLS.CA, CertFile: c.TLS.ClientCert, KeyFile: c.TLS.ClientKey,
		Username: "root", Password: "wrong", Node: "a"}
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("Open with a wrong password = %v, want an authentication error", err)
	}
	cfg.Password, cfg.CertFile, cfg.KeyFile = "s3cret", "", ""
	cfg.DialTimeout = 2 * time.Second
	if _, err := Open(ctx, cfg); err == nil {
		t.Error("Open without the client certificate succeeded")
	}
}

// TestReleaseRetried: a lock whose release fails (here its request's
// context was cancelled; in production a request that timed out) is
// released again in the background, and until then this process holds it:
// a new Lock of the name here would take the very key the retry deletes.
// Another node gets the lock once it is released, not when the session
// ends.
func TestReleaseRetried(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	logs := &logBuffer{}
	a := open(t, cluster, prefix, "node-a", func(c *Config) {
		c.LeaseTTL = time.Minute
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	b := open(t, cluster, prefix, "node-b", nil)
	l, err := a.Lock(ctx, "certificates/r")
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Unlock(cancelled); err == nil {
		t.Fatal("Unlock with a cancelled context succeeded")
	}
	for _, tt := range []struct {
		who string
		be  *Backend
	}{{"this process", a}, {"another node", b}} {
		if _, err := tt.be.Lock(ctx, "certificates/r"); !errors.Is(err, store.ErrLocked) {
			t.Errorf("Lock by %s while the release is retried = %v, want ErrLocked", tt.who, err)
		}
	}
	start := time.Now()
	for {
		lb, err := b.Lock(ctx, "certificates/r")
		if err == nil {
			t.Logf("released %s after the failed Unlock", time.Since(start).Round(time.Millisecond))
			lb.Unlock(ctx)
			break
		}
		if !errors.Is(err, store.ErrLocked) || time.Since(start) > 3*ReleaseRetry {
			t.Fatalf("another node's Lock %s after the failed Unlock = %v, want it to succeed within %s", time.Since(start).Round(time.Millisecond), err, 3*ReleaseRetry)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "released a lock after a failed first attempt") {
		t.Errorf("the retried release was not logged:\n%s", logs)
	}
	if _, err := a.Lock(ctx, "certificates/r"); err != nil {
		t.Errorf("this process's Lock once released = %v", err)
	}
}
