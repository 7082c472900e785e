package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// Serve runs run on the storage s describes, for as long as ctx lasts, as
// the daemon does. On the file backend it opens the storage (taking its
// lock) and calls run once. On etcd it takes the whole-storage lock —
// standing by, and trying again every third of the lease TTL, while another
// node holds it — and calls run with a store fenced by that lock. If the
// lock is lost (the node's lease expired: it was paused or cut off from
// etcd), run's context is cancelled, every write it still tries is refused,
// and the node stands by again. So one node at a time does the work, and
// another takes over within the lease TTL and a third of it when the
// worker dies.
func Serve(ctx context.Context, s config.Storage, opts StoreOptions, run func(context.Context, *store.Store) error) error {
	if s.Backend != config.BackendEtcd {
		st, err := OpenStore(ctx, s, opts)
		if err != nil {
			return fmt.Errorf("opening storage: %w", err)
		}
		defer st.Close()
		return run(ctx, st)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := OpenEtcd(ctx, s, opts)
	if err != nil {
		return fmt.Errorf("opening storage: %w", err)
	}
	defer b.Close()
	retry := s.LeaseTTL.Duration / 3
	standingBy := false
	for {
		lock, err := b.Lock(ctx, store.StorageLock)
		if errors.Is(err, store.ErrLocked) {
			if !standingBy {
				log.Info("standing by: another node holds the storage lock", "error", err.Error(), "retry", retry)
				standingBy = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(retry):
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("locking the storage: %w", err)
		}
		standingBy = false
		log.Info("holding the storage lock", "token", lock.Token())
		st, err := store.New(b, store.Options{Logger: opts.Logger, Fence: lock})
		if err != nil {
			lock.Unlock(context.WithoutCancel(ctx))
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lock.Done():
				cancel()
			case <-rctx.Done():
			}
		}()
		err = run(rctx, st)
		cancel()
		select {
		case <-lock.Done():
			if ctx.Err() == nil {
				log.Warn("lost the storage lock (the lease expired); standing by", "token", lock.Token())
				continue
			}
		default:
		}
		lock.Unlock(context.WithoutCancel(ctx))
		return err
	}
}
