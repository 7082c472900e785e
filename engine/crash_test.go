package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

var errCrash = errors.New("crashed")

// crashBackend stands for a process killed at one write point: the first
// budget operations written through Apply take effect (one Apply may be
// cut short after a prefix of its operations, as Backend.Apply allows),
// every later write fails and changes nothing. A cut inside a run of Batch
// operations loses the run's first operation too: any of a run may be
// lost, not only its tail.
type crashBackend struct {
	store.Backend
	mu      sync.Mutex
	budget  int
	crashed bool
}

func (b *crashBackend) Apply(ctx context.Context, l store.Lock, ops []store.Op) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.crashed {
		return errCrash
	}
	if len(ops) <= b.budget {
		b.budget -= len(ops)
		return b.Backend.Apply(ctx, l, ops)
	}
	b.crashed = true
	cut := ops[:b.budget]
	if n := len(cut); n > 0 && cut[n-1].Batch {
		start := n - 1
		for start > 0 && cut[start-1].Batch {
			start--
		}
		cut = append(slices.Clone(cut[:start]), cut[start+1:]...)
	}
	if len(cut) > 0 {
		if err := b.Backend.Apply(ctx, l, cut); err != nil {
			return err
		}
	}
	return errCrash
}

func (b *crashBackend) Put(ctx context.Context, key string, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.crashed {
		return errCrash
	}
	return b.Backend.Put(ctx, key, value)
}

// withCrashingEngine runs f with an engine over cfg's storage that crashes
// after budget written operations; it reports whether the crash came.
func (e *env) withCrashingEngine(cfg *config.Config, budget int, f func(eng *Engine)) bool {
	e.t.Helper()
	fb, err := store.OpenFileBackend(cfg.Storage, store.FileOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	lock, err := fb.Lock(context.Background(), store.StorageLock)
	if err != nil {
		e.t.Fatal(err)
	}
	cb := &crashBackend{Backend: fb, budget: budget}
	st, err := store.New(cb, store.Options{Fence: lock})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	eng, err := New(Options{Config: cfg, Store: st, Logger: slog.New(slog.DiscardHandler), Now: e.now})
	if err != nil {
		e.t.Fatal(err)
	}
	defer eng.Close()
	f(eng)
	return cb.crashed
}

// TestCrashAtEveryWritePoint stops issue, renew and revoke at each of
// their writes in turn, as a kill would, and checks what the next run
// does: it issues or deploys what is missing, never deploys a
// certificate other than the current one, replaces a revoked certificate
// whatever point the revocation reached, and leaves one account.
func TestCrashAtEveryWritePoint(t *testing.T) {
	ctx := context.Background()
	type step struct {
		name string
		// output gives the certificate an output copy, so that its deploy
		// has something to do (without one, the outcome of the deploy is
		// stored with the version).
		output bool
		// prepare runs before the crashing engine (without crashing).
		prepare func(e *env, cfg *config.Config)
		// act runs on the crashing engine.
		act func(t *testing.T, eng *Engine)
		// check judges the next run's result; before is the serial
		// current before act, after the serial current before the next
		// run.
		// asked says whether the crashing engine sent the CA a revocation.
		check func(t *testing.T, r Result, before, after string, revokeRecorded, asked bool)
	}
	run := func(t *testing.T, eng *Engine, opts RunOptions) {
		if _, err := eng.Run(ctx, opts); err != nil {
			t.Fatal(err)
		}
	}
	steps := []step{
		{
			name: "issue",
			act:  func(t *testing.T, eng *Engine) { run(t, eng, RunOptions{}) },
			check: func(t *testing.T, r Result, before, after string, _, _ bool) {
				want := map[Action]bool{ActionIssued: after == "", ActionDeployed: after != "", ActionNone: after != ""}
				if !want[r.Action] || r.Err != nil {
					t.Errorf("next run = %s %q %v (current before it: %q), want it issued or deployed", r.Action, r.Reason, r.Err, after)
				}
			},
		},
		{
			name:    "renew",
			prepare: func(e *env, cfg *config.Config) { e.run(cfg, RunOptions{}) },
			act:     func(t *testing.T, eng *Engine) { run(t, eng, RunOptions{Force: true}) },
			check: func(t *testing.T, r Result, before, after string, _, _ bool) {
				switch {
				case after == before && (r.Action == ActionNone || r.Action == ActionRenewed):
				case after != before && (r.Action == ActionDeployed || r.Action == ActionNone):
				default:
					t.Errorf("next run = %s %q %v (serial %s → %s), want nothing or a renewal for the old certificate, a deploy or nothing for the new", r.Action, r.Reason, r.Err, before, after)
				}
				if r.Err != nil {
					t.Errorf("next run failed: %v", r.Err)
				}
			},
		},
		{
			name:    "revoke",
			prepare: func(e *env, cfg *config.Config) { e.run(cfg, RunOptions{}) },
			act: func(t *testing.T, eng *Engine) {
				eng.Revoke(ctx, "crash", RevokeOptions{Reason: acme.ReasonKeyCompromise})
			},
			check: func(t *testing.T, r Result, before, after string, recorded, asked bool) {
				if asked && !recorded {
					t.Errorf("the CA was asked to revoke, but nothing was recorded: the next run keeps the revoked certificate")
				}
				if recorded && (r.Action != ActionRenewed || r.Err != nil || r.Serial == before) {
					t.Errorf("next run after a recorded revocation = %s %q %v, want the certificate replaced", r.Action, r.Reason, r.Err)
				}
				if !recorded && r.Action != ActionNone {
					t.Errorf("next run after a revocation that recorded nothing = %s %q %v, want nothing (the CA was not asked)", r.Action, r.Reason, r.Err)
				}
			},
		},
	}
	for _, s := range steps[:2] {
		s.name += " with an output copy"
		s.output = true
		steps = append(steps, s)
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for budget := 0; ; budget++ {
				e := newEnv(t)
				certs := "[[certificate]]\nname = \"crash\"\ndomains = [\"crash.example.com\"]\nsolver = \"webroot\"\nreuse_key = true\n"
				if s.output {
					certs += "output.fullchain = \"crash-fullchain.pem\"\n"
				}
				cfg := e.write(certs)
				if s.prepare != nil {
					s.prepare(e, cfg)
				}
				before := currentSerial(t, cfg)
				pebble.Counter().Reset()
				crashed := e.withCrashingEngine(cfg, budget, func(eng *Engine) { s.act(t, eng) })
				if !crashed {
					if budget < 2 {
						t.Fatalf("%s wrote fewer than 2 operations", s.name)
					}
					t.Logf("%s: %d write points", s.name, budget)
					return
				}
				counts, _ := pebble.Counter().Snapshot()
				asked := counts["POST /revoke-cert"] > 0
				keyBefore := accountKeyPEM(t, cfg)
				after := currentSerial(t, cfg)
				recorded := e.meta(cfg, "crash").Renewal.Revoked
				r := e.run(cfg, RunOptions{})["crash"]
				t.Run(fmt.Sprintf("crash after %d writes", budget), func(t *testing.T) {
					s.check(t, r, before, after, recorded, asked)
					if v, err := currentVersion(cfg); err == nil && r.Serial != "" && v.Info.Serial != r.Serial {
						t.Errorf("next run reports serial %s, the current is %s", r.Serial, v.Info.Serial)
					}
					if keyBefore != nil && string(accountKeyPEM(t, cfg)) != string(keyBefore) {
						t.Errorf("the next run changed the account key: a second account")
					}
					if v, err := currentVersion(cfg); s.output && err == nil {
						if out, err := os.ReadFile(cfg.Certificates[0].Output.Fullchain); err != nil || string(out) != string(v.Fullchain()) {
							t.Errorf("after the next run the output copy is not the current certificate's fullchain (%v)", err)
						}
					}
				})
			}
		})
	}
}

func currentVersion(cfg *config.Config) (*store.Version, error) {
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.LoadCertificate(context.Background(), "crash")
}

func currentSerial(t *testing.T, cfg *config.Config) string {
	t.Helper()
	v, err := currentVersion(cfg)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil && !errors.Is(err, store.ErrKeyMovedAside) {
		t.Fatal(err)
	}
	return v.Info.Serial
}

// accountKeyPEM returns the stored account key, nil if none.
func accountKeyPEM(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.LoadAccount(context.Background(), cfg.CA.Directory)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return a.KeyPEM
}
