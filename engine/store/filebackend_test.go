package store_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/storetest"
)

// withoutOpenat2 runs f twice: with openat2, and as on a kernel without
// it.
func withoutOpenat2(t *testing.T, f func(t *testing.T)) {
	for _, off := range []bool{false, true} {
		t.Run(map[bool]string{false: "openat2", true: "walk"}[off], func(t *testing.T) {
			was := store.NoOpenat2.Load()
			store.NoOpenat2.Store(off)
			defer store.NoOpenat2.Store(was)
			f(t)
		})
	}
}

func TestFileBackendConformance(t *testing.T) { withoutOpenat2(t, testFileBackendConformance) }

func testFileBackendConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Storage {
		dir := filepath.Join(t.TempDir(), "storage")
		return storetest.Storage{
			Open: func(t *testing.T) store.Backend {
				b, err := store.OpenFileBackend(dir, store.FileOptions{})
				if err != nil {
					t.Fatalf("OpenFileBackend = %v", err)
				}
				return b
			},
			Raw: func(t *testing.T, key string) ([]byte, error) {
				b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
				if errors.Is(err, os.ErrNotExist) {
					return nil, store.ErrNotFound
				}
				return b, err
			},
		}
	})
}

func openBackend(t *testing.T, dir string) *store.FileBackend {
	t.Helper()
	b, err := store.OpenFileBackend(dir, store.FileOptions{})
	if err != nil {
		t.Fatalf("OpenFileBackend(%s) = %v", dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestFileBackendRefusesLinks plants symbolic links where the backend
// creates directories, values and its lock: each is refused and the
// link's target is untouched.
func TestFileBackendRefusesLinks(t *testing.T) { withoutOpenat2(t, testFileBackendRefusesLinks) }

func testFileBackendRefusesLinks(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		link string // below the storage directory
		do   func(b *store.FileBackend) error
		want error
	}{
		{"lock", "lock", func(b *store.FileBackend) error {
			l, err := b.Lock(ctx, store.StorageLock)
			if l != nil {
				l.Unlock(ctx)
			}
			return err
		}, store.ErrUnsafe},
		{"certificate directory", "certificates/www", func(b *store.FileBackend) error {
			return b.Put(ctx, "certificates/www/versions/v1/key.pem", []byte("key"))
		}, store.ErrUnsafe},
		{"certificate directory read", "certificates/www", func(b *store.FileBackend) error {
			_, err := b.Get(ctx, "certificates/www/target")
			return err
		}, store.ErrUnsafe},
		{"value", "certificates/www/meta.json", func(b *store.FileBackend) error {
			_, err := b.Get(ctx, "certificates/www/meta.json")
			return err
		}, store.ErrUnsafe},
		{"value in apply", "accounts/ca/key.pem", func(b *store.FileBackend) error {
			return b.Apply(ctx, nil, []store.Op{store.Create("accounts/ca/key.pem", []byte("new key"))})
		}, store.ErrExists},
		// A Put replaces the link itself, never what it points to.
		{"value put", "accounts/ca/account.json", func(b *store.FileBackend) error {
			return b.Put(ctx, "accounts/ca/account.json", []byte("{}"))
		}, nil},
		{"temporary directory", ".tmp", func(b *store.FileBackend) error { return nil }, store.ErrUnsafe},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "storage")
			target := filepath.Join(base, "target")
			if err := os.Mkdir(target, 0o700); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(target, "target")
			if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, filepath.FromSlash(c.link))
			if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
				t.Fatal(err)
			}
			linkTarget := target
			if !strings.HasSuffix(c.name, "directory") && !strings.HasSuffix(c.name, "read") {
				linkTarget = victim
			}
			if err := os.Symlink(linkTarget, link); err != nil {
				t.Fatal(err)
			}
			b, err := store.OpenFileBackend(dir, store.FileOptions{})
			if err == nil {
				defer b.Close()
				err = c.do(b)
			}
			want := c.want
			if err != want && !errors.Is(err, want) {
				t.Errorf("with %s a symbolic link: %v, want %v", c.link, err, want)
			} else if errors.Is(err, store.ErrUnsafe) && !strings.Contains(err.Error(), link) {
				t.Errorf("error %q does not name %s", err, link)
			}
			if got, _ := os.ReadFile(victim); string(got) != "precious" {
				t.Errorf("link target now holds %q", got)
			}
			if entries, _ := os.ReadDir(target); len(entries) != 1 {
				t.Errorf("files created in the link's target: %d entries", len(entries))
			}
		})
	}
}

// TestFileBackendRefusesUnsafeDirectory: a storage directory of another
// user, or one that group or others can write, is refused with a message
// saying how to fix it, and nothing in it is touched.
func TestFileBackendRefusesUnsafeDirectory(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"group writable", func(dir string) error { return os.Chmod(dir, 0o770) }, "chmod 700 "},
		{"world writable", func(dir string) error { return os.Chmod(dir, 0o757) }, "chmod 700 "},
		{"other owner", func(dir string) error {
			if os.Geteuid() != 0 {
				t.Skip("chown to another user needs root")
			}
			return os.Chown(dir, 54321, 54321)
		}, "owned by uid 54321"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "storage")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := c.setup(dir); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				b, err := store.OpenFileBackend(dir, store.FileOptions{ReadOnly: ro})
				if err == nil {
					b.Close()
				}
				if !errors.Is(err, store.ErrUnsafe) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
					t.Errorf("OpenFileBackend(read-only %v) = %v, want ErrUnsafe naming %s and saying %q", ro, err, dir, c.want)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("refused directory was written to: %v", entries)
			}
		})
	}
	// A private directory that is merely readable by others is made 0700,
	// as before.
	dir := filepath.Join(t.TempDir(), "storage")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	openBackend(t, dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("storage directory mode = %v, %v; want 0700", fi.Mode(), err)
	}
}

// TestFileBackendCrashResidue: temporary files a crash left in .tmp/ are
// removed when the storage is opened.
func TestFileBackendCrashResidue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "storage")
	b := openBackend(t, dir)
	if err := b.Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	residue := filepath.Join(dir, ".tmp", "0123456789abcdef")
	if err := os.WriteFile(residue, []byte("half a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	b = openBackend(t, dir)
	if _, err := os.Stat(residue); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("crash residue after open: %v, want removed", err)
	}
	if v, err := b.Get(context.Background(), "k"); err != nil || string(v) != "v" {
		t.Errorf("Get(k) = %q, %v", v, err)
	}
}

// TestFileBackendOldReleaseResidue: what a crash of a release before
// FileBackend left (unfinished .staging- versions, .NAME.tmp- files,
// .current- links) is removed at the first writable open, and nothing else:
// not the certificate's files, not a user's file, not what a planted link
// points at. A read-only open removes nothing.
func TestFileBackendOldReleaseResidue(t *testing.T) {
	withoutOpenat2(t, testFileBackendOldReleaseResidue)
}

func testFileBackendOldReleaseResidue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "storage")
	outside := t.TempDir()
	write := func(rel, content string) string {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	residue := []string{
		write("certificates/www/versions/.staging-20260101T000000Z-1a2b/cert.pem", "half"),
		write("certificates/www/versions/.staging-20260101T000000Z-1a2b/.key.pem.tmp-123", "half"),
		write("certificates/www/.meta.json.tmp-4242", "{"),
		write("accounts/ca-1a2b/.account.json.tmp-77", "{"),
		write("accounts/ca-1a2b/.key.pem.tmp-78", "half a key"),
		filepath.Join(dir, "certificates/www/.current-9f8e"),
	}
	if err := os.Symlink("versions/v1", residue[len(residue)-1]); err != nil {
		t.Fatal(err)
	}
	kept := []string{
		write("certificates/www/versions/v1/cert.pem", "cert"),
		write("certificates/www/meta.json", "{}"),
		write("certificates/www/notes.txt", "the user's"),
		write("accounts/ca-1a2b/account.json", "{}"),
		filepath.Join(outside, ".meta.json.tmp-1"),
		filepath.Join(outside, ".staging-x", "cert.pem"),
	}
	for _, p := range kept[len(kept)-2:] {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("not the storage's"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Links planted as a certificate directory and as a staging version.
	if err := os.Symlink(outside, filepath.Join(dir, "certificates", "planted")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "certificates/www/versions/.staging-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}

	ro, err := store.OpenFileBackend(dir, store.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ro.Close()
	for _, p := range residue {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("read-only open removed %s: %v", p, err)
		}
	}

	openBackend(t, dir).Close()
	for _, p := range residue {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after open: %v, want removed", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "certificates/www/versions/.staging-20260101T000000Z-1a2b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unfinished version directory after open: %v, want removed", err)
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after open: %v, want kept", p, err)
		}
	}
	// A link planted as a staging version is no directory: left alone,
	// and its target too (checked above through kept).
	if _, err := os.Lstat(filepath.Join(dir, "certificates/www/versions/.staging-link")); err != nil {
		t.Errorf("planted .staging- link: %v, want left alone", err)
	}

	// Swept once: residue planted later (which this release never makes)
	// is left to the sweep's record, and the open reads no directory.
	late := write("certificates/www/.meta.json.tmp-5", "{")
	openBackend(t, dir).Close()
	if _, err := os.Stat(late); err != nil {
		t.Errorf("second open: %v, want the sweep done once", err)
	}
}

// TestFileBackendReadOnly: no lock, no writes, nothing created; a missing
// directory is an empty storage.
func TestFileBackendReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "storage")
	w := openBackend(t, dir)
	l, err := w.Lock(ctx, store.StorageLock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if err := w.Put(ctx, "certificates/www/meta.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	r, err := store.OpenFileBackend(dir, store.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open while locked = %v", err)
	}
	defer r.Close()
	if v, err := r.Get(ctx, "certificates/www/meta.json"); err != nil || string(v) != "{}" {
		t.Errorf("read-only Get = %q, %v", v, err)
	}
	for name, write := range map[string]func() error{
		"Put":    func() error { return r.Put(ctx, "k", []byte("v")) },
		"Delete": func() error { return r.Delete(ctx, "certificates/www/meta.json") },
		"Apply":  func() error { return r.Apply(ctx, nil, []store.Op{store.Put("k", []byte("v"))}) },
		"Lock": func() error {
			_, err := r.Lock(ctx, "other")
			return err
		},
	} {
		if err := write(); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("%s on a read-only backend = %v, want ErrReadOnly", name, err)
		}
	}
	missing := filepath.Join(dir, "missing")
	m, err := store.OpenFileBackend(missing, store.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a missing directory = %v", err)
	}
	defer m.Close()
	if _, err := m.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get from a missing directory = %v, want ErrNotFound", err)
	}
	if got, err := m.List(ctx, "certificates/"); err != nil || len(got) != 0 {
		t.Errorf("List from a missing directory = %q, %v", got, err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only open created the directory")
	}
}

// TestFileBackendModes: directories 0700, certificates 0644, everything
// else 0600, whatever the umask.
func TestFileBackendModes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "storage")
	b := openBackend(t, dir)
	for key, want := range map[string]os.FileMode{
		"certificates/www/versions/v1/key.pem":       0o600,
		"certificates/www/versions/v1/cert.pem":      0o644,
		"certificates/www/versions/v1/fullchain.pem": 0o644,
		"certificates/www/versions/v1/version.json":  0o600,
		"certificates/www/aside/v1.key.pem":          0o600,
		"accounts/ca/key-20270101T000000Z.pem.old":   0o600,
	} {
		if err := b.Put(ctx, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(filepath.Join(dir, key))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s mode = %v, %v; want %o", key, fi.Mode(), err, want)
		}
		for d := filepath.Dir(filepath.Join(dir, key)); d != filepath.Dir(dir); d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("directory %s mode = %v, %v; want 0700", d, fi.Mode(), err)
			}
		}
	}
	l, err := b.Lock(ctx, store.StorageLock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if fi, err := os.Stat(filepath.Join(dir, "lock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if !bytes.Contains(mustReadFile(t, filepath.Join(dir, "lock")), []byte(`"token":`)) {
		t.Errorf("lock file does not record the fencing token")
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
