package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/acmehook/acmehook/internal/testetcd"
)

// TestAbort: with its cluster gone, a backend's requests wait for their
// timeout (10 s), and a closing one for ReleaseTimeout. Abort makes the
// request in flight, every later one, and Close's revocation of the lease
// fail at once.
func TestAbort(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	b, err := Open(t.Context(), Config{Endpoints: c.Endpoints, Prefix: testPrefix(t), Node: "n1", LeaseTTL: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Session(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	failed := make(chan error, 1)
	go func() {
		_, err := b.Get(context.Background(), "k")
		failed <- err
	}()
	time.Sleep(200 * time.Millisecond)
	const soon = time.Second
	start := time.Now()
	b.Abort()
	select {
	case err := <-failed:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the request in flight failed with %v, want context.Canceled", err)
		}
	case <-time.After(soon):
		t.Fatalf("the request in flight still waits %s after Abort", soon)
	}
	if _, err := b.Get(context.Background(), "k"); !errors.Is(err, context.Canceled) || time.Since(start) > soon {
		t.Errorf("a Get after Abort: %v after %s, want context.Canceled at once", err, time.Since(start))
	}
	closing := time.Now()
	if err := b.Close(); err == nil || time.Since(closing) > soon {
		t.Errorf("Close after Abort = %v after %s, want the lease's revocation refused at once", err, time.Since(closing))
	}
}
