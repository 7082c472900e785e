package fleet

import (
	"context"
	"fmt"
	"strings"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
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
