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

func TestBasics(t *testing.T) {
	ctx := t.Context()
	b := open(t, cluster, testPrefix(t), "a", nil)
	for _, k := range []string{"certificates/www/versions/v1/cert.pem", "certificates/www/versions/v1/key.pem",
		"certificates/www/versions/v2/cert.pem", "certificates/www/current", "certificates/api/meta.json",
		"certificates/www.example", "accounts/a/key.pem", "x", "x/y"} {
		if err := b.Put(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}
	lists := map[string][]string{
		"":                           {"accounts/", "certificates/", "x", "x/"},
		"certificates/":              {"api/", "www.example", "www/"},
		"certificates/www/":          {"current", "versions/"},
		"certificates/www/versions/": {"v1/", "v2/"},
		"nothing/":                   nil,
	}
	for prefix, want := range lists {
		got, err := b.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("List(%q) (-want +got):\n%s", prefix, diff)
		}
	}
	if v, err := b.Get(ctx, "x/y"); err != nil || string(v) != "v:x/y" {
		t.Errorf("Get(x/y) = %q, %v", v, err)
	}
	if ki, err := b.Stat(ctx, "x"); err != nil || ki.Size != int64(len("v:x")) {
		t.Errorf("Stat(x) = %+v, %v", ki, err)
	}
	if err := b.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := b.Get(ctx, "x/y"); err != nil {
		t.Errorf("Delete(x) removed x/y: %v", err)
	}
	if err := b.Put(ctx, "../x", nil); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("Put(../x) = %v, want ErrInvalidKey", err)
	}
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

func TestLockExclusion(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	a := open(t, cluster, prefix, "node-a", nil)
	b := open(t, cluster, prefix, "node-b", nil)
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lock(ctx, "certificates/www"); !errors.Is(err, store.ErrLocked) {
		t.Errorf("second Lock in the same backend = %v, want ErrLocked", err)
	}
	_, err = b.Lock(ctx, "certificates/www")
	if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "node-a") {
		t.Errorf("Lock by another node = %v, want ErrLocked naming node-a", err)
	}
	// A lock below another's name is a different lock.
	lsub, err := b.Lock(ctx, "certificates/www/sub")
	if err != nil {
		t.Fatalf("Lock(certificates/www/sub) = %v", err)
	}
	lsub.Unlock(ctx)
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	<-la.Done()
	if err := a.Apply(ctx, la, []store.Op{store.Put("k", nil)}); !errors.Is(err, store.ErrLockLost) {
		t.Errorf("Apply after Unlock = %v, want ErrLockLost", err)
	}
	lb, err := b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	if lb.Token() <= la.Token() {
		t.Errorf("token after takeover %d <= earlier token %d", lb.Token(), la.Token())
	}
	if err := a.Apply(ctx, lb, []store.Op{store.Put("k", nil)}); !errors.Is(err, store.ErrLockLost) {
		t.Errorf("Apply with another backend's lock = %v, want ErrLockLost", err)
	}
}

func TestApplyCreate(t *testing.T) {
	ctx := t.Context()
	b := open(t, cluster, testPrefix(t), "a", nil)
	l, err := b.Lock(ctx, "accounts")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, l, []store.Op{store.Create("accounts/a/key.pem", []byte("1")), store.Put("accounts/a/meta.json", []byte("{}"))}); err != nil {
		t.Fatal(err)
	}
	err = b.Apply(ctx, l, []store.Op{store.Put("accounts/a/meta.json", []byte("2")), store.Create("accounts/a/key.pem", []byte("2"))})
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("Apply creating an existing key = %v, want ErrExists", err)
	}
	if v, _ := b.Get(ctx, "accounts/a/meta.json"); string(v) != "{}" {
		t.Errorf("a refused Apply wrote meta.json = %q", v)
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

func TestClose(t *testing.T) {
	ctx := t.Context()
	prefix := testPrefix(t)
	a := open(t, cluster, prefix, "a", nil)
	b := open(t, cluster, prefix, "b", nil)
	la, err := a.Lock(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	<-la.Done()
	if _, err := a.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	// Close revoked the lease: the lock is free at once.
	if _, err := b.Lock(ctx, "l"); err != nil {
		t.Errorf("Lock after the holder closed: %v", err)
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
