package engine

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// metaWrites counts, per certificate, the writes of its metadata through
// Apply.
type metaWrites struct {
	store.Backend
	mu     sync.Mutex
	writes map[string]int
}

func (b *metaWrites) Apply(ctx context.Context, l store.Lock, ops []store.Op) error {
	b.mu.Lock()
	for _, op := range ops {
		if rest, ok := strings.CutPrefix(op.Key, "certificates/"); ok && op.Kind == store.OpPut && strings.HasSuffix(op.Key, "/meta.json") {
			b.writes[rest[:strings.IndexByte(rest, '/')]]++
		}
	}
	b.mu.Unlock()
	return b.Backend.Apply(ctx, l, ops)
}

// TestDeployWithNothingToDo: a certificate without output copies or
// scripts has a deploy that cannot fail, so its outcome is stored with the
// version: the metadata is written twice per issuance (the reissue guard's
// count before the order, then with the version), not three times, and it
// says deployed, with the issued event naming the version. A certificate
// with an output copy still stores its version with the deploy pending
// and records the outcome after the copy is written.
func TestDeployWithNothingToDo(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "plain"
domains = ["plain.quiet.example.com"]
solver = "webroot"

[[certificate]]
name = "copied"
domains = ["copied.quiet.example.com"]
solver = "webroot"
output.fullchain = "copied-fullchain.pem"
`)
	var mw *metaWrites
	st := openThrough(t, cfg, func(fb store.Backend) store.Backend {
		mw = &metaWrites{Backend: fb, writes: map[string]int{}}
		return mw
	})
	eng, err := New(Options{Config: cfg, Store: st, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	res, err := eng.Run(context.Background(), RunOptions{})
	eng.Close()
	st.Close()
	if err != nil || !res.OK() {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	for name, want := range map[string]int{"plain": 2, "copied": 3} {
		if got := mw.writes[name]; got != want {
			t.Errorf("%s: %d metadata writes, want %d", name, got, want)
		}
		m := e.meta(cfg, name)
		v, err := func() (*store.Version, error) {
			st, err := store.Open(cfg.Storage, store.Options{})
			if err != nil {
				return nil, err
			}
			defer st.Close()
			return st.LoadCertificate(context.Background(), name)
		}()
		if err != nil {
			t.Fatal(err)
		}
		if m.PendingDeploy {
			t.Errorf("%s: deploy still pending after the run", name)
		}
		if n := len(m.Events); n == 0 || m.Events[n-1] != (MetaEvent{Time: m.Events[n-1].Time, Name: "issued", Result: "ok", Version: v.ID}) {
			t.Errorf("%s: events %+v, want the last one issued ok for version %s", name, m.Events, v.ID)
		}
	}
	if out, err := os.ReadFile(cfg.Certificates[1].Output.Fullchain); err != nil || len(out) == 0 {
		t.Errorf("output copy of copied: %v", err)
	}
}

// openThrough opens cfg's file storage, holding its lock, with every
// backend request going through the Backend wrap returns (a counter).
func openThrough(t *testing.T, cfg *config.Config, wrap func(store.Backend) store.Backend) *store.Store {
	t.Helper()
	fb, err := store.OpenFileBackend(cfg.Storage, store.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lock, err := fb.Lock(context.Background(), store.StorageLock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(wrap(fb), store.Options{Fence: lock})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
