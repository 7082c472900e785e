package engine

import (
	"context"
	"slices"
	"sync"
)

// workers bounds how many certificates an engine works on at once
// (Config.Concurrency), across its runs: the daemon's runs may overlap in a
// fleet. A free worker goes to the waiters of an urgent run first (one the
// daemon started beside another: a certificate taken over, another node's
// new version), then to the others, each first come first served; so what
// a fleet's daemon starts in the middle of a long run waits for the next
// worker to finish, not for its turn behind the long run's queue.
type workers struct {
	mu      sync.Mutex
	n       int
	free    int
	waiting [2][]chan struct{} // [0] urgent, [1] the others
}

func newWorkers(n int) *workers { return &workers{n: max(n, 1), free: max(n, 1)} }

// busy is how many workers are taken: the certificates being worked on,
// each a sequence of ACME requests (the client's Streams).
func (w *workers) busy() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n - w.free
}

// acquire takes a worker, waiting until one is free or ctx is done.
func (w *workers) acquire(ctx context.Context, urgent bool) error {
	q := 1
	if urgent {
		q = 0
	}
	w.mu.Lock()
	if w.free > 0 && len(w.waiting[0])+len(w.waiting[1]) == 0 {
		w.free--
		w.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	w.waiting[q] = append(w.waiting[q], ch)
	w.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		if i := slices.Index(w.waiting[q], ch); i >= 0 {
			w.waiting[q] = slices.Delete(w.waiting[q], i, i+1)
			w.mu.Unlock()
			return ctx.Err()
		}
		w.mu.Unlock()
		w.release() // handed to us meanwhile: pass it on
		return ctx.Err()
	}
}

// release gives a worker back: to the first urgent waiter, else the first
// other one, else it is free.
func (w *workers) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for q := range w.waiting {
		if len(w.waiting[q]) > 0 {
			ch := w.waiting[q][0]
			w.waiting[q] = w.waiting[q][1:]
			close(ch)
			return
		}
	}
	w.free++
}
