package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// MigrateStorage copies the file storage at s.Path into the etcd storage s
// describes (s.Backend is "etcd"), as `acmehook storage migrate --to etcd`
// does: it takes the file storage's lock (so no acmehook runs on it
// meanwhile) and the etcd storage's, copies with Migrate, verifies, and
// leaves the files as they were.
func MigrateStorage(ctx context.Context, s config.Storage, opts StoreOptions) (MigrateReport, error) {
	src, err := store.OpenFileBackend(s.Path, store.FileOptions{Logger: opts.Logger})
	if err != nil {
		return MigrateReport{}, fmt.Errorf("opening the file storage %s: %w", s.Path, err)
	}
	defer src.Close()
	if _, err := src.Lock(ctx, store.StorageLock); err != nil {
		return MigrateReport{}, fmt.Errorf("locking the file storage %s: %w", s.Path, err)
	}
	dst, err := OpenEtcd(ctx, s, opts)
	if err != nil {
		return MigrateReport{}, err
	}
	defer dst.Close()
	lock, err := dst.Lock(ctx, store.StorageLock)
	if err != nil {
		return MigrateReport{}, fmt.Errorf("locking the etcd storage: %w", err)
	}
	return Migrate(ctx, src, dst, lock)
}

// MigrateReport says what Migrate copied.
type MigrateReport struct {
	Keys         int // values copied and verified
	Accounts     int // accounts/ entries (one per CA)
	Certificates int // certificates/ entries
}

// Migrate copies every value of src into dst, which must hold nothing yet,
// then reads each back from dst and compares it with src. Links (the
// current pointers) are written after everything else, so a reader of dst
// never sees a current version that is not there yet. src is only read.
// The writes are fenced with dstLock (nil: unfenced).
//
// Migrate works below the certificate layer, so accounts, every stored
// version, keys moved aside, rollover intents and the engine's state all
// travel as they are.
func Migrate(ctx context.Context, src, dst store.Backend, dstLock store.Lock) (MigrateReport, error) {
	var rep MigrateReport
	existing, err := dst.List(ctx, "")
	if err != nil {
		return rep, fmt.Errorf("listing the destination: %w", err)
	}
	if len(existing) > 0 {
		return rep, fmt.Errorf("the destination already holds %s: migrate copies into an empty storage only", strings.Join(existing, ", "))
	}
	keys, err := walk(ctx, src, "")
	if err != nil {
		return rep, err
	}
	var links, plain []string
	for _, k := range keys {
		if store.IsLink(k) {
			links = append(links, k)
		} else {
			plain = append(plain, k)
		}
	}
	values := map[string][]byte{}
	for _, k := range append(plain, links...) {
		v, err := src.Get(ctx, k)
		if err != nil {
			return rep, fmt.Errorf("reading %s: %w", k, err)
		}
		values[k] = v
		if err := dst.Apply(ctx, dstLock, []store.Op{store.Put(k, v)}); err != nil {
			return rep, fmt.Errorf("copying %s: %w", k, err)
		}
	}
	for _, k := range keys {
		got, err := dst.Get(ctx, k)
		if err != nil {
			return rep, fmt.Errorf("verifying %s: %w", k, err)
		}
		if !bytes.Equal(got, values[k]) {
			return rep, fmt.Errorf("verifying %s: the copy differs from the source", k)
		}
	}
	rep.Keys = len(keys)
	for _, dir := range []struct {
		prefix string
		n      *int
	}{{"accounts/", &rep.Accounts}, {"certificates/", &rep.Certificates}} {
		l, err := src.List(ctx, dir.prefix)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, err
		}
		*dir.n = len(l)
	}
	return rep, nil
}

// walk returns every key below prefix, depth first, sorted.
func walk(ctx context.Context, b store.Backend, prefix string) ([]string, error) {
	entries, err := b.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("listing %q: %w", prefix, err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e, "/") {
			sub, err := walk(ctx, b, prefix+e)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
			continue
		}
		out = append(out, prefix+e)
	}
	return out, nil
}
