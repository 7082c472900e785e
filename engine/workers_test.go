package engine

import (
	"context"
	"testing"
	"time"
)

// TestWorkers: with every worker busy, a freed worker goes to the urgent
// waiter (a run the daemon started beside another) before a waiter that
// came first; a waiter whose ctx ends gives up its place; and the bound
// holds throughout, and busy (the acme client's Streams) counts the
// workers taken, a worker handed from one certificate to the next
// included.
func TestWorkers(t *testing.T) {
	w := newWorkers(1)
	ctx := context.Background()
	if err := w.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	if b := w.busy(); b != 1 {
		t.Errorf("busy = %d with the only worker taken, want 1", b)
	}
	got := make(chan string, 3)
	waiter := func(name string, ctx context.Context, urgent bool) {
		if err := w.acquire(ctx, urgent); err != nil {
			got <- name + ": " + err.Error()
			return
		}
		got <- name
	}
	queued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			w.mu.Lock()
			q := len(w.waiting[0]) + len(w.waiting[1])
			w.mu.Unlock()
			if q == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d waiters queued, want %d", q, n)
			}
		}
	}
	next := func(want string) {
		t.Helper()
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("next = %q, want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nobody got a worker, want %q", want)
		}
	}
	gone, cancel := context.WithCancel(ctx)
	go waiter("first", ctx, false)
	queued(1)
	go waiter("cancelled", gone, true)
	queued(2)
	go waiter("urgent", ctx, true)
	queued(3)
	cancel()
	next("cancelled: context canceled")
	select {
	case g := <-got:
		t.Fatalf("%q got a worker while the only one is held", g)
	case <-time.After(50 * time.Millisecond):
	}
	w.release()
	next("urgent")
	if b := w.busy(); b != 1 {
		t.Errorf("busy = %d with the worker handed on, want 1", b)
	}
	w.release()
	next("first")
	w.release()
	if w.free != 1 || w.busy() != 0 {
		t.Errorf("free = %d, busy = %d after every worker came back, want 1 and 0", w.free, w.busy())
	}
}
