package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
)

// Serve runs run on the storage s describes, for as long as ctx lasts, as
// the daemon does. On the file backend it opens the storage (taking its
// lock) and calls run with no coordinator. On etcd every node works: run
// gets the unfenced store and this node's Coordinator, which shares the
// certificates out among the live nodes (rendezvous hashing over their
// sessions) and fences each certificate's writes with its lock; a node that
// dies has its certificates taken over within the lease TTL and
// CheckInterval of it.
func Serve(ctx context.Context, s config.Storage, opts StoreOptions, run func(context.Context, *store.Store, engine.Coordinator) error) error {
	st, coord, closeAll, err := OpenNode(ctx, s, opts, true)
	if err != nil {
		return fmt.Errorf("opening storage: %w", err)
	}
	if eb, err := EtcdBackend(st.Backend()); err == nil {
		defer abortAfterStop(ctx, eb, opts.logger(), "storage")()
	}
	defer closeAll()
	if c, ok := coord.(*Coordinator); ok {
		opts.logger().Info("fleet node started", "node", c.Node(), "nodes", strings.Join(c.Nodes(), ","), "check_interval", c.Interval())
	}
	return run(ctx, st, coord)
}

// OpenNode opens the storage s describes for a process that writes. On the
// file backend it is OpenStore (the storage lock fences every write) and
// the coordinator is nil. On etcd the store is unfenced and the
// coordinator holds the certificates' locks: with split, it shares the
// certificates out among the live nodes (the daemon); without, this node
// claims any certificate whose lock is free (run, issue, revoke beside the
// fleet's daemons). closeAll stops the coordinator and closes the store.
func OpenNode(ctx context.Context, s config.Storage, opts StoreOptions, split bool) (*store.Store, engine.Coordinator, func(), error) {
	if s.Backend != config.BackendEtcd {
		st, err := OpenStore(ctx, s, opts)
		if err != nil {
			return nil, nil, nil, err
		}
		return st, nil, func() { st.Close() }, nil
	}
	opts.Daemon = split
	b, err := OpenEtcd(ctx, s, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := store.New(b, store.Options{Logger: opts.Logger})
	if err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	coord, err := NewCoordinator(ctx, b, st, CoordinatorOptions{Split: split, Logger: opts.Logger})
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return st, coord, func() { coord.Close(); st.Close() }, nil
}

// StopTimeout is how long a stopping daemon (its Serve or relay context
// done: SIGTERM) waits for etcd. What it gives back on the way out —
// challenges withdrawn, certificate locks released, its leases revoked —
// normally takes milliseconds; past StopTimeout its connections to etcd
// are closed (etcd.Backend.Abort), every etcd request still waiting fails
// at once, and its leases expire by themselves after lease_ttl. A daemon
// whose cluster is gone thus stops within StopTimeout of SIGTERM, plus its
// plugins' own cleanup of the challenges in flight.
const StopTimeout = 3 * time.Second

// abortAfterStop aborts b's connection StopTimeout after ctx ends, unless
// the returned function is called first (the close finished in time).
func abortAfterStop(ctx context.Context, b *etcd.Backend, log *slog.Logger, what string) (disarm func()) {
	var (
		mu       sync.Mutex
		t        *time.Timer
		disarmed bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if disarmed {
			return
		}
		t = time.AfterFunc(StopTimeout, func() {
			log.Warn("stopping: etcd did not answer in time; closing the connection, the node's lease and locks expire by themselves (lease_ttl)", "connection", what, "waited", StopTimeout)
			b.Abort()
		})
	})
	return func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		disarmed = true
		if t != nil {
			t.Stop()
		}
	}
}
