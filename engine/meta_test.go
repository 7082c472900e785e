package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/google/go-cmp/cmp"
)

func openMetaStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "storage"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestMetaRoundTrip: what the engine saves it loads back, with the last
// MaxEvents events and every error text capped.
func TestMetaRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := openMetaStore(t)
	e := &Engine{store: st, log: slog.New(slog.DiscardHandler)}
	m, err := e.loadMeta(ctx, "site")
	if err != nil || !cmp.Equal(m, &Meta{}) {
		t.Fatalf("loadMeta before saving = %+v, %v; want zero Meta", m, err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	m = &Meta{
		Renewal: renewal.State{
			ARIWindow: renewal.Window{Start: at, End: at.Add(48 * time.Hour)}, ARIChosen: at.Add(time.Hour), ARINextFetch: at.Add(6 * time.Hour),
			Failures: 2, RetryAt: at.Add(10 * time.Minute), Orders: []time.Time{at}, Revoked: true, RevokedAt: at,
		},
		PendingDeploy: true,
	}
	for i := range MaxEvents + 5 {
		m.Events = append(m.Events, MetaEvent{Time: at.Add(time.Duration(i) * time.Minute), Name: "issued", Result: "ok"})
	}
	if err := e.saveMeta(ctx, "site", m); err != nil {
		t.Fatal(err)
	}
	got, err := e.loadMeta(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	want := *m
	want.Events = m.Events[5:]
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("loadMeta (-want +got):\n%s", diff)
	}
	// A 16 MiB script error, six times over, stays bounded.
	huge := strings.Repeat("x", 16<<20)
	for range 6 {
		m.Events = append(m.Events, MetaEvent{Time: at, Name: "failed", Result: "error", Detail: huge})
		m.Renewal.LastError = huge
		if err := e.saveMeta(ctx, "site", m); err != nil {
			t.Fatal(err)
		}
	}
	b, err := st.LoadState(ctx, "site")
	if err != nil || len(b) > 64<<10 {
		t.Errorf("metadata after six 16 MiB errors = %d bytes, %v; want under 64 KiB", len(b), err)
	}
}

// TestMetaRecovery: corrupt or oversized metadata is set aside with a
// warning and the certificate carries on with fresh metadata; a read-only
// store (list) shows it the same way without writing.
func TestMetaRecovery(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		state []byte
	}{
		{"truncated", []byte(`{"renewal":{"consecutive_fail`)},
		{"not json", []byte("\x00\x01garbage")},
		{"too large", bytes.Repeat([]byte(" "), store.MaxStateSize+1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "storage")
			st, err := store.Open(dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			path := filepath.Join(dir, "certificates", "site", "meta.json")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, c.state, 0o600); err != nil {
				t.Fatal(err)
			}
			ro, err := store.OpenReadOnly(dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if m, err := readMeta(ctx, ro, "site", log); err != nil || !cmp.Equal(m, &Meta{}) {
				t.Errorf("read-only readMeta = %+v, %v; want zero Meta", m, err)
			}
			ro.Close()
			if _, err := os.Stat(path); err != nil {
				t.Errorf("read-only readMeta touched the metadata: %v", err)
			}
			m, err := readMeta(ctx, st, "site", log)
			if err != nil || !cmp.Equal(m, &Meta{}) {
				t.Errorf("readMeta = %+v, %v; want zero Meta", m, err)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "set aside") {
				t.Errorf("no warning about the metadata set aside; log:\n%s", logs.String())
			}
			kept, _ := filepath.Glob(filepath.Join(dir, "certificates", "site", "meta.corrupt-*.json"))
			if len(kept) != 1 {
				t.Fatalf("metadata kept for inspection: %v, want one file", kept)
			}
			if c.name != "too large" {
				if b, _ := os.ReadFile(kept[0]); !bytes.Equal(b, c.state) {
					t.Errorf("kept metadata = %q, want %q", b, c.state)
				}
			}
			if m, err := readMeta(ctx, st, "site", log); err != nil || !cmp.Equal(m, &Meta{}) {
				t.Errorf("readMeta after recovery = %+v, %v", m, err)
			}
		})
	}
}

// TestListRecovers: a certificate whose metadata is truncated, and one
// whose directory is a planted symbolic link, do not stop the others from
// being listed; the truncated metadata is set aside and the certificate
// listed from its version (issue 15).
func TestListRecovers(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "good"
domains = ["good.example.com"]
solver = "webroot"
[[certificate]]
name = "corrupt"
domains = ["corrupt.example.com"]
solver = "webroot"
[[certificate]]
name = "planted"
domains = ["planted.example.com"]
solver = "webroot"
`)
	ctx := context.Background()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, name := range []string{"good", "corrupt"} {
		v := &store.Version{KeyPEM: []byte("key"), CertPEM: []byte("cert"), Info: store.VersionInfo{
			Serial: "01", Names: []string{name + ".example.com"}, KeyType: "ec256", NotAfter: time.Now().Add(60 * 24 * time.Hour)}}
		if err := st.Commit(ctx, name, v, []byte(`{"pending_deploy":false}`)); err != nil {
			t.Fatal(err)
		}
		if name == "corrupt" {
			if err := os.WriteFile(filepath.Join(cfg.Storage, "certificates", name, "versions", v.ID, "meta.json"), []byte(`{"renewal":{"consec`), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(cfg.Storage, "certificates", "planted")); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	eng, err := New(Options{Config: cfg, Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	got := map[string]Status{}
	for _, s := range eng.List(ctx) {
		got[s.Name] = s
	}
	if s := got["good"]; s.Err != nil || s.Current == nil || s.Current.Serial != "01" {
		t.Errorf("good = %+v, want its version listed", s)
	}
	if s := got["corrupt"]; s.Err != nil || s.Current == nil || s.Current.Serial != "01" {
		t.Errorf("corrupt = %+v, want its version listed despite the metadata", s)
	}
	if s := got["planted"]; !errors.Is(s.Err, store.ErrUnsafe) {
		t.Errorf("planted = %+v, want an ErrUnsafe error", s)
	}
	if !strings.Contains(logs.String(), "set aside") {
		t.Errorf("no warning about the metadata set aside; log:\n%s", logs.String())
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("written into the planted link's target: %v", entries)
	}
}
