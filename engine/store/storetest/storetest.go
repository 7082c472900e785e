// Package storetest is the conformance suite of store.Backend: every
// backend runs it from its own tests,
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Storage {
//			dir := t.TempDir()
//			return storetest.Storage{Open: func(t *testing.T) store.Backend { ... open dir ... }}
//		})
//	}
//
// and passes it before it is used. The cases check what the doc comments
// of store.Backend promise: get/put/delete/list/stat semantics and errors,
// Apply's order, its create preconditions and its fence, lock exclusion
// between two clients and the fencing token, Close.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/store"
)

// Storage is one fresh, empty storage under test.
type Storage struct {
	// Open returns a new client of the storage. Each call is independent
	// (its own locks), as another process or another node would be: the
	// suite opens two to check lock exclusion and fencing. The suite
	// closes what it opens. Required.
	Open func(t *testing.T) store.Backend
	// Raw, if not nil, returns the bytes the storage itself holds for key,
	// beneath any wrapper (for etcd: the value of the prefixed key read
	// with the etcd client), or an error wrapping store.ErrNotFound.
	Raw func(t *testing.T, key string) ([]byte, error)
	// Sealed says the backend encrypts private keys (store.IsSecret): with
	// Raw set, the suite then checks that no secret value appears in Raw
	// in plain text, and that the other values do (so the check can fail).
	Sealed bool
}

// Run runs every case, each on a storage of its own from newStorage.
func Run(t *testing.T, newStorage func(t *testing.T) Storage) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStorage(t)
			c.run(t, &suite{t: t, s: s})
		})
	}
}

type suite struct {
	t *testing.T
	s Storage
}

// open opens a client and closes it at the end of the test.
func (s *suite) open() store.Backend {
	s.t.Helper()
	b := s.s.Open(s.t)
	s.t.Cleanup(func() { b.Close() })
	return b
}

var cases = []struct {
	name string
	run  func(t *testing.T, s *suite)
}{
	{"GetPut", testGetPut},
	{"NotFound", testNotFound},
	{"Delete", testDelete},
	{"InvalidKeys", testInvalidKeys},
	{"List", testList},
	{"Stat", testStat},
	{"Links", testLinks},
	{"TooLarge", testTooLarge},
	{"ApplyOrder", testApplyOrder},
	{"ApplyCreate", testApplyCreate},
	{"ApplyBatch", testApplyBatch},
	{"LockExclusion", testLockExclusion},
	{"FenceAfterUnlock", testFenceAfterUnlock},
	{"FenceAfterTakeover", testFenceAfterTakeover},
	{"FenceOfAnotherClient", testFenceOfAnotherClient},
	{"Close", testClose},
	{"Concurrent", testConcurrent},
	{"ConcurrentPutDelete", testConcurrentPutDelete},
	{"SecondClientSees", testSecondClientSees},
	{"Secrets", testSecrets},
	{"CanceledContext", testCanceledContext},
}

func mustPut(t *testing.T, b store.Backend, key string, value []byte) {
	t.Helper()
	if err := b.Put(context.Background(), key, value); err != nil {
		t.Fatalf("Put(%q) = %v", key, err)
	}
}

func wantValue(t *testing.T, b store.Backend, key string, want []byte) {
	t.Helper()
	got, err := b.Get(context.Background(), key)
	if err != nil {
		t.Errorf("Get(%q) = %v, want %q", key, err, want)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Get(%q) = %q, want %q", key, got, want)
	}
}

func wantMissing(t *testing.T, b store.Backend, key string) {
	t.Helper()
	if got, err := b.Get(context.Background(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
}

func testGetPut(t *testing.T, s *suite) {
	b := s.open()
	values := map[string][]byte{
		"a":                                []byte("one"),
		"certificates/www/meta.json":       []byte(`{"x":1}`),
		"certificates/www/versions/v1/c":   []byte("-----BEGIN CERTIFICATE-----\n"),
		"accounts/ca-1a2b/account.json":    []byte("{}"),
		"empty":                            {},
		"binary":                           {0, 1, 2, 0xff, 0, '\n'},
		"deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n": []byte("deep"),
	}
	for k, v := range values {
		mustPut(t, b, k, v)
	}
	for k, v := range values {
		wantValue(t, b, k, v)
	}
	mustPut(t, b, "a", []byte("two"))
	wantValue(t, b, "a", []byte("two"))
	// The caller's slice is not kept.
	v := []byte("three")
	mustPut(t, b, "a", v)
	v[0] = 'X'
	wantValue(t, b, "a", []byte("three"))
}

func testNotFound(t *testing.T, s *suite) {
	b := s.open()
	wantMissing(t, b, "missing")
	wantMissing(t, b, "missing/below/prefix")
	mustPut(t, b, "dir/key", []byte("v"))
	wantMissing(t, b, "dir/other")
	wantMissing(t, b, "dir") // a prefix is not a key
	if _, err := b.Stat(context.Background(), "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(context.Background(), "dir"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(dir), a prefix, = %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	mustPut(t, b, "x/a", []byte("a"))
	mustPut(t, b, "x/b", []byte("b"))
	mustPut(t, b, "x/sub/c", []byte("c"))
	if err := b.Delete(ctx, "x/a"); err != nil {
		t.Fatalf("Delete(x/a) = %v", err)
	}
	wantMissing(t, b, "x/a")
	wantValue(t, b, "x/b", []byte("b"))
	if err := b.Delete(ctx, "x/a"); err != nil {
		t.Errorf("Delete of a missing key = %v, want nil", err)
	}
	if err := b.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete(never/was) = %v, want nil", err)
	}
	// Deleting a prefix as if it were a key removes nothing below it.
	if err := b.Delete(ctx, "x/sub"); err != nil {
		t.Errorf("Delete(x/sub), a prefix, = %v, want nil", err)
	}
	wantValue(t, b, "x/sub/c", []byte("c"))
}

func testInvalidKeys(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	for _, key := range []string{"", "/a", "a/", "a//b", "..", "../x", "a/../b", ".hidden", "a/.tmp", "a/./b", `a\b`, "a b", "a\x00b", strings.Repeat("k", 256)} {
		if _, err := b.Get(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Get(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Put(ctx, key, []byte("v")); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Stat(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Apply(ctx, nil, []store.Op{store.Put("ok", []byte("v")), store.Put(key, []byte("v"))}); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Apply(put %q) = %v, want ErrInvalidKey", key, err)
		}
		if l, err := b.Lock(ctx, key); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("Lock(%q) = %v, want ErrInvalidKey", key, err)
			if l != nil {
				l.Unlock(ctx)
			}
		}
	}
	// Apply checked every key before writing any.
	wantMissing(t, b, "ok")
	for _, prefix := range []string{"a", "/", "a//", "../"} {
		if _, err := b.List(ctx, prefix); !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}
}

func testList(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	if got, err := b.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("List(\"\") of an empty storage = %q, %v; want nothing", got, err)
	}
	for _, k := range []string{
		"certificates/www/current", "certificates/www/meta.json", "certificates/www/versions/v1/cert.pem",
		"certificates/www/versions/v2/cert.pem", "certificates/api/meta.json", "certificates/b-2/meta.json",
		"accounts/ca/key.pem", "top",
	} {
		v := []byte("value")
		if store.IsLink(k) {
			v = []byte("versions/v2")
		}
		mustPut(t, b, k, v)
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"accounts/", "certificates/", "top"}},
		{"certificates/", []string{"api/", "b-2/", "www/"}},
		{"certificates/www/", []string{"current", "meta.json", "versions/"}},
		{"certificates/www/versions/", []string{"v1/", "v2/"}},
		{"certificates/www/versions/v1/", []string{"cert.pem"}},
		{"certificates/nothing/", []string{}},
		{"top/", []string{}},
		{"certificates/ww/", []string{}}, // a prefix of a name is not its parent
	} {
		got, err := b.List(ctx, c.prefix)
		if err != nil {
			t.Errorf("List(%q) = %v", c.prefix, err)
			continue
		}
		if got == nil {
			got = []string{}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q, want %q", c.prefix, got, c.want)
		}
	}
	// Once the last key below a prefix goes, so does the prefix.
	if err := b.Delete(ctx, "certificates/www/versions/v1/cert.pem"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.List(ctx, "certificates/www/versions/"); !slices.Equal(got, []string{"v2/"}) {
		t.Errorf("List(versions/) after deleting v1's only key = %q, want [v2/]", got)
	}
	for _, k := range []string{"certificates/api/meta.json"} {
		if err := b.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := b.List(ctx, "certificates/"); !slices.Equal(got, []string{"b-2/", "www/"}) {
		t.Errorf("List(certificates/) after deleting api's only key = %q, want [b-2/ www/]", got)
	}
}

func testStat(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	before := time.Now().Add(-2 * time.Second)
	mustPut(t, b, "k/v", []byte("12345"))
	fi, err := b.Stat(ctx, "k/v")
	if err != nil {
		t.Fatalf("Stat = %v", err)
	}
	if fi.Key != "k/v" || fi.Size != 5 {
		t.Errorf("Stat(k/v) = %+v, want key k/v size 5", fi)
	}
	if !fi.Modified.IsZero() && (fi.Modified.Before(before) || fi.Modified.After(time.Now().Add(2*time.Second))) {
		t.Errorf("Stat(k/v).Modified = %v, want about now (or zero)", fi.Modified)
	}
	mustPut(t, b, "k/v", []byte("123"))
	if fi, err := b.Stat(ctx, "k/v"); err != nil || fi.Size != 3 {
		t.Errorf("Stat after overwrite = %+v, %v; want size 3", fi, err)
	}
}

func testLinks(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	mustPut(t, b, "c/versions/v1/cert.pem", []byte("one"))
	mustPut(t, b, "c/current", []byte("versions/v1"))
	wantValue(t, b, "c/current", []byte("versions/v1"))
	if err := b.Apply(ctx, nil, []store.Op{store.Put("c/versions/v2/cert.pem", []byte("two")), store.Put("c/current", []byte("versions/v2"))}); err != nil {
		t.Fatal(err)
	}
	wantValue(t, b, "c/current", []byte("versions/v2"))
	if fi, err := b.Stat(ctx, "c/current"); err != nil || fi.Size != int64(len("versions/v2")) {
		t.Errorf("Stat(c/current) = %+v, %v; want size %d", fi, err, len("versions/v2"))
	}
	if got, _ := b.List(ctx, "c/"); !slices.Equal(got, []string{"current", "versions/"}) {
		t.Errorf("List(c/) = %q, want [current versions/]", got)
	}
	if err := b.Delete(ctx, "c/current"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, b, "c/current")
	wantValue(t, b, "c/versions/v2/cert.pem", []byte("two"))
}

func testTooLarge(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	big := bytes.Repeat([]byte("x"), store.MaxValueSize+1)
	if err := b.Put(ctx, "big", big); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("Put of MaxValueSize+1 bytes = %v, want ErrTooLarge", err)
	}
	if err := b.Apply(ctx, nil, []store.Op{store.Put("big", big)}); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("Apply of MaxValueSize+1 bytes = %v, want ErrTooLarge", err)
	}
	wantMissing(t, b, "big")
	mustPut(t, b, "max", big[:store.MaxValueSize])
	wantValue(t, b, "max", big[:store.MaxValueSize])
}

func testApplyOrder(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	mustPut(t, b, "old", []byte("old"))
	ops := []store.Op{
		store.Put("v/a", []byte("1")),
		store.Put("v/b", []byte("2")),
		store.Put("v/a", []byte("3")), // later ops win
		store.Delete("old"),
		store.Delete("never"),
		store.Put("v/commit", []byte("done")),
	}
	if err := b.Apply(ctx, nil, ops); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	wantValue(t, b, "v/a", []byte("3"))
	wantValue(t, b, "v/b", []byte("2"))
	wantValue(t, b, "v/commit", []byte("done"))
	wantMissing(t, b, "old")
	if err := b.Apply(ctx, nil, nil); err != nil {
		t.Errorf("Apply of no operations = %v", err)
	}
	// Under a lock too.
	l, err := b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if err := b.Apply(ctx, l, []store.Op{store.Put("v/a", []byte("4")), store.Delete("v/b")}); err != nil {
		t.Fatalf("Apply under the lock = %v", err)
	}
	wantValue(t, b, "v/a", []byte("4"))
	wantMissing(t, b, "v/b")
}

// testApplyBatch: operations marked Batch take effect as the same
// operations unmarked would, in order (a later write of a key wins, a delete
// in a run removes, an emptied prefix is no longer listed), a run may end
// an Apply, and a Create in a run keeps its precondition.
func testApplyBatch(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	mustPut(t, b, "old/x", []byte("old"))
	mustPut(t, b, "gone/y", []byte("gone"))
	ops := []store.Op{
		store.Batched(store.Put("v/a", []byte("1"))),
		store.Batched(store.Put("v/b", []byte("2"))),
		store.Batched(store.Put("w/c", []byte("3"))),
		store.Batched(store.Put("v/a", []byte("4"))), // later ops win
		store.Batched(store.Delete("old/x")),
		store.Batched(store.Delete("never")),
		store.Batched(store.Create("v/k.pem", []byte("k"))),
		store.Put("v/done", []byte("done")), // ends the run
		store.Batched(store.Delete("gone/y")),
		store.Batched(store.Put("v/current", []byte("w"))), // the last op: never part of a run
	}
	if err := b.Apply(ctx, nil, ops); err != nil {
		t.Fatalf("Apply = %v", err)
	}
	wantValue(t, b, "v/a", []byte("4"))
	wantValue(t, b, "v/b", []byte("2"))
	wantValue(t, b, "w/c", []byte("3"))
	wantValue(t, b, "v/k.pem", []byte("k"))
	wantValue(t, b, "v/done", []byte("done"))
	wantValue(t, b, "v/current", []byte("w"))
	wantMissing(t, b, "old/x")
	wantMissing(t, b, "gone/y")
	if l, err := b.List(ctx, ""); err != nil || !slices.Equal(l, []string{"v/", "w/"}) {
		t.Errorf("List(\"\") = %v, %v; want [v/ w/] (emptied prefixes gone)", l, err)
	}
	// A Create of an existing key in a run applies nothing.
	err := b.Apply(ctx, nil, []store.Op{store.Batched(store.Put("v/b", []byte("changed"))), store.Batched(store.Create("v/k.pem", []byte("again"))), store.Put("v/done", []byte("again"))})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("Apply(batched create of an existing key) = %v, want ErrExists", err)
	}
	wantValue(t, b, "v/b", []byte("2"))
	wantValue(t, b, "v/k.pem", []byte("k"))
	// A run is fenced like any operation.
	l, err := b.Lock(ctx, "certificates/batch")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	err = b.Apply(ctx, l, []store.Op{store.Batched(store.Put("v/b", []byte("fenced"))), store.Put("v/done", []byte("fenced"))})
	if !errors.Is(err, store.ErrLockLost) {
		t.Errorf("Apply(batch) under a released lock = %v, want ErrLockLost", err)
	}
	wantValue(t, b, "v/b", []byte("2"))
}

func testApplyCreate(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	if err := b.Apply(ctx, nil, []store.Op{store.Create("acct/key.pem", []byte("first")), store.Put("acct/account.json", []byte("{}"))}); err != nil {
		t.Fatalf("Apply(create new) = %v", err)
	}
	wantValue(t, b, "acct/key.pem", []byte("first"))
	// A create of an existing key applies nothing, not even the ops before it.
	err := b.Apply(ctx, nil, []store.Op{store.Put("acct/account.json", []byte("changed")), store.Create("acct/key.pem", []byte("second"))})
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("Apply(create existing) = %v, want ErrExists", err)
	}
	wantValue(t, b, "acct/key.pem", []byte("first"))
	wantValue(t, b, "acct/account.json", []byte("{}"))
	// Concurrent creates of one key: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			err := b.Apply(ctx, nil, []store.Op{store.Create("race/key.pem", fmt.Appendf(nil, "%d", i))})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrExists):
				t.Errorf("concurrent create = %v, want nil or ErrExists", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent creates of one key succeeded, want 1", wins)
	}
}

func testLockExclusion(t *testing.T, s *suite) {
	ctx := context.Background()
	a, b := s.open(), s.open()
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatalf("Lock = %v", err)
	}
	if la.Name() != "certificates/www" {
		t.Errorf("Lock.Name() = %q, want certificates/www", la.Name())
	}
	start := time.Now()
	if l, err := b.Lock(ctx, "certificates/www"); !errors.Is(err, store.ErrLocked) {
		t.Errorf("second client's Lock of a held lock = %v, want ErrLocked", err)
		if l != nil {
			l.Unlock(ctx)
		}
	}
	if l, err := a.Lock(ctx, "certificates/www"); !errors.Is(err, store.ErrLocked) {
		t.Errorf("same client's second Lock of a held lock = %v, want ErrLocked", err)
		if l != nil {
			l.Unlock(ctx)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Lock of a held lock took %v: it must not wait", d)
	}
	// Other names are independent; locks and keys are separate namespaces.
	lb, err := b.Lock(ctx, "certificates/api")
	if err != nil {
		t.Errorf("Lock of another name = %v", err)
	} else {
		lb.Unlock(ctx)
	}
	mustPut(t, a, "certificates/www", []byte("a key, not a lock"))
	wantValue(t, b, "certificates/www", []byte("a key, not a lock"))
	select {
	case <-la.Done():
		t.Errorf("Done() closed while the lock is held")
	default:
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("Unlock = %v", err)
	}
	select {
	case <-la.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("Done() not closed after Unlock")
	}
	if err := la.Unlock(ctx); err != nil {
		t.Errorf("second Unlock = %v, want nil", err)
	}
	lb, err = b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatalf("Lock after the holder unlocked = %v", err)
	}
	defer lb.Unlock(ctx)
	if lb.Token() <= la.Token() {
		t.Errorf("fencing token after takeover = %d, want more than the previous holder's %d", lb.Token(), la.Token())
	}
}

func testFenceAfterUnlock(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	l, err := b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, l, []store.Op{store.Put("w/a", []byte("1"))}); err != nil {
		t.Fatalf("Apply under the lock = %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	err = b.Apply(ctx, l, []store.Op{store.Put("w/a", []byte("2")), store.Put("w/b", []byte("2"))})
	if !errors.Is(err, store.ErrLockLost) {
		t.Errorf("Apply with a released lock = %v, want ErrLockLost", err)
	}
	wantValue(t, b, "w/a", []byte("1"))
	wantMissing(t, b, "w/b")
}

func testFenceAfterTakeover(t *testing.T, s *suite) {
	ctx := context.Background()
	a, b := s.open(), s.open()
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	la.Unlock(ctx)
	lb, err := b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Unlock(ctx)
	// The old holder writes late: refused, nothing applied.
	if err := a.Apply(ctx, la, []store.Op{store.Put("w/state", []byte("stale"))}); !errors.Is(err, store.ErrLockLost) {
		t.Errorf("stale holder's Apply = %v, want ErrLockLost", err)
	}
	wantMissing(t, b, "w/state")
	if err := b.Apply(ctx, lb, []store.Op{store.Put("w/state", []byte("new"))}); err != nil {
		t.Errorf("new holder's Apply = %v", err)
	}
	wantValue(t, a, "w/state", []byte("new"))
}

func testFenceOfAnotherClient(t *testing.T, s *suite) {
	ctx := context.Background()
	a, b := s.open(), s.open()
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	defer la.Unlock(ctx)
	// A lock is a fence only for the client that holds it.
	if err := b.Apply(ctx, la, []store.Op{store.Put("w/x", []byte("x"))}); !errors.Is(err, store.ErrLockLost) {
		t.Errorf("Apply with another client's lock = %v, want ErrLockLost", err)
	}
	wantMissing(t, a, "w/x")
}

func testClose(t *testing.T, s *suite) {
	ctx := context.Background()
	a := s.s.Open(t)
	mustPut(t, a, "k", []byte("v"))
	la, err := a.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case <-la.Done():
	case <-time.After(5 * time.Second):
		t.Errorf("lock's Done() not closed by the backend's Close")
	}
	if _, err := a.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := a.Put(ctx, "k", []byte("w")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	// Its locks are free for the next client; the data is still there.
	b := s.open()
	lb, err := b.Lock(ctx, "certificates/www")
	if err != nil {
		t.Fatalf("Lock after the holder closed = %v", err)
	}
	lb.Unlock(ctx)
	wantValue(t, b, "k", []byte("v"))
}

func testConcurrent(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 5 {
				key := fmt.Sprintf("certificates/c%02d/versions/v%d/cert.pem", i, j)
				if err := b.Apply(ctx, nil, []store.Op{store.Put(key, []byte(key)), store.Put(fmt.Sprintf("certificates/c%02d/current", i), fmt.Appendf(nil, "versions/v%d", j))}); err != nil {
					t.Errorf("Apply(%s) = %v", key, err)
				}
				if j > 0 {
					if err := b.Delete(ctx, fmt.Sprintf("certificates/c%02d/versions/v%d/cert.pem", i, j-1)); err != nil {
						t.Errorf("Delete = %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	got, err := b.List(ctx, "certificates/")
	if err != nil || len(got) != 16 {
		t.Fatalf("List(certificates/) = %d entries, %v; want 16", len(got), err)
	}
	for i := range 16 {
		wantValue(t, b, fmt.Sprintf("certificates/c%02d/current", i), []byte("versions/v4"))
		if got, _ := b.List(ctx, fmt.Sprintf("certificates/c%02d/versions/", i)); !slices.Equal(got, []string{"v4/"}) {
			t.Errorf("versions of c%02d = %q, want [v4/]", i, got)
		}
	}
}

// testConcurrentPutDelete writes and deletes keys of one prefix at once: a
// write into a prefix that another client's Delete just emptied (for a file
// backend: a directory made or removed meanwhile) still succeeds, and a
// create still refuses an existing key.
func testConcurrentPutDelete(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 25 {
				key := fmt.Sprintf("shared/d%d/k%d", j%3, i)
				op := store.Put(key, []byte(key))
				if j%2 == 1 {
					op = store.Create(key, []byte(key))
				}
				if err := b.Apply(ctx, nil, []store.Op{op}); err != nil {
					t.Errorf("Apply(%s %s) = %v", op.Kind, key, err)
					return
				}
				if err := b.Delete(ctx, key); err != nil {
					t.Errorf("Delete(%s) = %v", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, err := b.List(ctx, ""); err != nil || slices.Contains(got, "shared/") {
		t.Errorf("List() = %q, %v; want no shared/ once every key is deleted", got, err)
	}
}

func testSecondClientSees(t *testing.T, s *suite) {
	ctx := context.Background()
	a, b := s.open(), s.open()
	mustPut(t, a, "shared/k", []byte("from a"))
	wantValue(t, b, "shared/k", []byte("from a"))
	if err := b.Apply(ctx, nil, []store.Op{store.Put("shared/k", []byte("from b"))}); err != nil {
		t.Fatal(err)
	}
	wantValue(t, a, "shared/k", []byte("from b"))
	if err := a.Delete(ctx, "shared/k"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, b, "shared/k")
}

func testSecrets(t *testing.T, s *suite) {
	ctx := context.Background()
	b := s.open()
	const pemKey = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAcnJycnJycnJycnJycnJycnJycnJycnJycnJycnJycn\n-----END PRIVATE KEY-----\n"
	secret := []string{"accounts/ca/key.pem", "certificates/www/versions/v1/key.pem", "certificates/www/aside/v1.key.pem", "accounts/ca/key-20270101T000000.000000000Z.pem.old"}
	public := []string{"certificates/www/versions/v1/cert.pem", "accounts/ca/account.json"}
	for _, k := range secret {
		if !store.IsSecret(k) {
			t.Fatalf("IsSecret(%q) = false", k)
		}
	}
	if err := b.Apply(ctx, nil, []store.Op{store.Put(secret[0], []byte(pemKey)), store.Create(secret[1], []byte(pemKey))}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, secret[2], []byte(pemKey))
	mustPut(t, b, secret[3], []byte(pemKey))
	for _, k := range public {
		mustPut(t, b, k, []byte("public "+k))
	}
	for _, k := range secret {
		wantValue(t, b, k, []byte(pemKey))
	}
	if s.s.Raw == nil {
		return
	}
	for _, k := range secret {
		raw, err := s.s.Raw(t, k)
		if err != nil {
			t.Errorf("Raw(%q) = %v", k, err)
			continue
		}
		if plain := bytes.Contains(raw, []byte("PRIVATE KEY")); plain == s.s.Sealed {
			t.Errorf("raw value of %q holds the key in plain text: %v, want %v", k, plain, !s.s.Sealed)
		}
	}
	for _, k := range public {
		if raw, err := s.s.Raw(t, k); err != nil || !bytes.Equal(raw, []byte("public "+k)) {
			t.Errorf("raw value of %q = %q, %v; want it unchanged", k, raw, err)
		}
	}
}

func testCanceledContext(t *testing.T, s *suite) {
	b := s.open()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, "k", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a canceled context = %v, want context.Canceled", err)
	}
	if err := b.Apply(ctx, nil, []store.Op{store.Put("k", []byte("v"))}); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with a canceled context = %v, want context.Canceled", err)
	}
	if l, err := b.Lock(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a canceled context = %v, want context.Canceled", err)
		if l != nil {
			l.Unlock(context.Background())
		}
	}
	wantMissing(t, b, "k")
}
