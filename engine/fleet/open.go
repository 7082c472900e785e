package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
	"github.com/acmehook/acmehook/engine/store/sealed"
)

// StoreOptions say how OpenStore opens the configured storage.
type StoreOptions struct {
	// ReadOnly opens without taking the storage lock, for commands that
	// only read beside a running daemon (list, explain, nodes).
	ReadOnly bool
	// Logger receives the backend's logs; nil discards.
	Logger *slog.Logger
	// Version is this node's acmehook version, shown by `acmehook nodes`.
	Version string
	// Daemon registers the process as a member of the fleet, among which
	// the certificates are shared out (OpenNode with split sets it).
	Daemon bool
}

func (o StoreOptions) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// OpenStore opens the storage [storage] describes: the file backend's
// directory, or the etcd cluster with private keys sealed to the fleet's
// age recipients. Unless opts.ReadOnly, it takes the whole-storage lock
// (store.StorageLock) and fences every write with it; on etcd that lock is
// a lease-backed mutex, so a second node gets an error naming the holder.
// A node whose age identity is unusable (missing, readable by others, or
// not able to open the fleet's keys) fails here with an error saying so.
func OpenStore(ctx context.Context, s config.Storage, opts StoreOptions) (*store.Store, error) {
	sopts := store.Options{Logger: opts.Logger}
	switch s.Backend {
	case config.BackendFile, "":
		if opts.ReadOnly {
			return store.OpenReadOnly(s.Path, sopts)
		}
		return store.Open(s.Path, sopts)
	case config.BackendEtcd:
	default:
		return nil, fmt.Errorf("unknown storage backend %q", s.Backend)
	}
	b, err := OpenEtcd(ctx, s, opts)
	if err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		lock, err := b.Lock(ctx, store.StorageLock)
		if err != nil {
			b.Close()
			return nil, err
		}
		sopts.Fence = lock
	}
	st, err := store.New(b, sopts)
	if err != nil {
		b.Close()
		return nil, err
	}
	return st, nil
}

// OpenEtcd opens the etcd backend of s, wrapped so that private keys are
// sealed with age, without taking any lock.
func OpenEtcd(ctx context.Context, s config.Storage, opts StoreOptions) (*sealed.Backend, error) {
	if s.Backend != config.BackendEtcd {
		return nil, errors.New("the storage backend is not etcd")
	}
	ids, err := sealed.LoadIdentity(s.AgeIdentityFile)
	if err != nil {
		return nil, fmt.Errorf("storage.age_identity_file: %w", err)
	}
	b, err := etcd.Open(ctx, etcd.Config{
		Endpoints: s.Endpoints,
		CAFile:    s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile,
		Username: s.Username, Password: s.Password.Reveal(),
		Prefix: s.Prefix, LeaseTTL: s.LeaseTTL.Duration, Node: s.Node,
		ReadOnly: opts.ReadOnly, Version: opts.Version, Daemon: opts.Daemon,
		Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	sb, err := sealed.Open(ctx, b, s.Recipients, ids)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("storage.age_identity_file %s: %w", s.AgeIdentityFile, err)
	}
	return sb, nil
}
