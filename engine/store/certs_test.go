package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// Fake PEM contents: the store never parses them.
func fakeVersion(serial string) *Version {
	return &Version{
		KeyPEM:   []byte("-----BEGIN PRIVATE KEY-----\nkey " + serial + "\n-----END PRIVATE KEY-----\n"),
		CertPEM:  []byte("-----BEGIN CERTIFICATE-----\nleaf " + serial + "\n-----END CERTIFICATE-----\n"),
		ChainPEM: []byte("-----BEGIN CERTIFICATE-----\nissuer\n-----END CERTIFICATE-----\n"),
		Info: VersionInfo{
			Serial:   serial,
			Names:    []string{"example.com", "*.example.com"},
			KeyType:  "ec256",
			NotAfter: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC),
			OrderURL: "https://ca.example/order/" + serial,
		},
	}
}

// clock returns a Now function that advances one second per call.
func clock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Now: clock()})
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModes checks the modes of everything the store writes, on disk.
func TestModes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "storage")
	s := openStore(t, dir)
	const ca = "https://127.0.0.1:14000/dir"
	if err := s.CreateAccountKey(ctx, ca, []byte("account key")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveAccountInfo(ctx, ca, AccountInfo{URL: "https://127.0.0.1:14000/my-account/1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "site", fakeVersion("01ab"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveState(ctx, "site", []byte(`{"pending_deploy":true}`)); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"key.pem": 0o600, "account.json": 0o600, "version.json": 0o600, "meta.json": 0o600, "lock": 0o600, ".old-residue-removed": 0o600,
		"cert.pem": 0o644, "chain.pem": 0o644, "fullchain.pem": 0o644,
	}
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return nil
		case fi.IsDir():
			if got := fi.Mode().Perm(); got != 0o700 {
				t.Errorf("directory %s mode = %o, want 700", path, got)
			}
		default:
			w, ok := want[d.Name()]
			if !ok {
				t.Errorf("unexpected file %s", path)
				return nil
			}
			seen[d.Name()] = true
			if got := fi.Mode().Perm(); got != w {
				t.Errorf("file %s mode = %o, want %o", path, got, w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no file %s written", name)
		}
	}
	// The user-facing path through the symlink.
	full := mustRead(t, filepath.Join(dir, "certificates", "site", "current", "fullchain.pem"))
	if v := fakeVersion("01ab"); !bytes.Equal(full, v.Fullchain()) {
		t.Errorf("current/fullchain.pem = %q, want %q", full, v.Fullchain())
	}
}

func TestSaveLoadAndPreviousKept(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	if _, err := s.LoadCertificate(ctx, "site"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadCertificate before saving = %v, want ErrNotFound", err)
	}
	var ids []string
	for _, serial := range []string{"01", "02", "03", "04"} {
		v := fakeVersion(serial)
		if err := s.Commit(ctx, "site", v, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.ID)
		got, err := s.LoadCertificate(ctx, "site")
		if err != nil {
			t.Fatal(err)
		}
		want := fakeVersion(serial)
		want.ID = v.ID
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("LoadCertificate after saving %s (-want +got):\n%s", serial, diff)
		}
		files, err := s.Files("site", v.ID)
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string][]byte{files.Key: v.KeyPEM, files.Cert: v.CertPEM, files.Chain: v.ChainPEM, files.Fullchain: v.Fullchain()} {
			if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, want) {
				t.Errorf("Files: %s does not hold what was saved (%v)", path, err)
			}
		}
	}
	got, err := s.Versions(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	// DefaultKeep = 3: the oldest is pruned, current and two previous kept.
	if diff := cmp.Diff(ids[1:], got); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}
	prev, err := s.LoadVersion(ctx, "site", ids[2])
	if err != nil {
		t.Fatal(err)
	}
	if prev.Info.Serial != "03" || !bytes.Contains(prev.KeyPEM, []byte("key 03")) {
		t.Errorf("LoadVersion(previous) = serial %q key %q, want serial 03", prev.Info.Serial, prev.KeyPEM)
	}
	names, err := s.Names(ctx)
	if err != nil || !cmp.Equal(names, []string{"site"}) {
		t.Errorf("Names() = %v, %v; want [site]", names, err)
	}
}

var errInjected = errors.New("injected fault")

// failAt makes the n-th write point (counting from 1) of s's file backend
// fail, and reports where it was; hits counts the points passed.
type failAt struct {
	n, hits int
	point   string
	key     string
	// switched: the rename of a "current" pointer went ahead.
	switched bool
}

func (f *failAt) fault(point, key string) error {
	f.hits++
	if f.hits == f.n {
		f.point, f.key = point, key
		return errInjected
	}
	if point == "rename" && strings.HasSuffix(key, "/current") {
		f.switched = true
	}
	return nil
}

func inject(s *Store, f *failAt) { s.b.(*FileBackend).fault = f.fault }

// TestFailedSaveKeepsCurrent injects a failure at every write point of a
// Commit and checks that the previous version stays current, intact, and
// that nothing half-written remains — or, for a failure after the switch
// of current (syncing its directory), that the new version is current.
func TestFailedSaveKeepsCurrent(t *testing.T) {
	for n := 1; ; n++ {
		ctx := context.Background()
		dir := t.TempDir()
		s := openStore(t, dir)
		old := fakeVersion("01")
		if err := s.Commit(ctx, "site", old, nil); err != nil {
			t.Fatal(err)
		}
		f := &failAt{n: n}
		inject(s, f)
		nv := fakeVersion("02")
		err := s.Commit(ctx, "site", nv, nil)
		if f.point == "" {
			if err != nil || n < 10 {
				t.Fatalf("Commit passed %d write points without the fault (err %v); want more than 10", f.hits, err)
			}
			break
		}
		inject(s, &failAt{})
		name := fmt.Sprintf("%d-%s-%s", n, f.point, f.key)
		got, lerr := s.LoadCertificate(ctx, "site")
		if lerr != nil {
			t.Fatalf("%s: LoadCertificate = %v", name, lerr)
		}
		if err == nil {
			// Only a failure past the commit point leaves the new version
			// current, and Commit then says it is.
			if !f.switched || got.ID != nv.ID {
				t.Errorf("%s: Commit = nil with current %s (switched %v)", name, got.ID, f.switched)
			}
			continue
		}
		if !errors.Is(err, errInjected) {
			t.Fatalf("%s: Commit with fault = %v, want the injected fault", name, err)
		}
		if got.ID != old.ID || !bytes.Equal(got.KeyPEM, old.KeyPEM) || !bytes.Equal(got.CertPEM, old.CertPEM) {
			t.Errorf("%s: after failed save current = %s %q, want %s %q", name, got.ID, got.KeyPEM, old.ID, old.KeyPEM)
		}
		// The files a web server reads through "current" are the old pair.
		cur := filepath.Join(dir, "certificates", "site", "current")
		if b := mustRead(t, filepath.Join(cur, "key.pem")); !bytes.Equal(b, old.KeyPEM) {
			t.Errorf("%s: current/key.pem = %q, want %q", name, b, old.KeyPEM)
		}
		entries, err := os.ReadDir(filepath.Join(dir, "certificates", "site", "versions"))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != old.ID {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s: versions/ = %v, want only %s", name, names, old.ID)
		}
		if leftovers, _ := os.ReadDir(filepath.Join(dir, ".tmp")); len(leftovers) != 0 {
			t.Errorf("%s: temporary files left: %v", name, leftovers)
		}
	}
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	const ca = "https://acme-v02.api.letsencrypt.org/directory"
	if _, err := s.LoadAccount(ctx, ca); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadAccount before creating = %v, want ErrNotFound", err)
	}
	if err := s.SaveAccountInfo(ctx, ca, AccountInfo{URL: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SaveAccountInfo without a key = %v, want ErrNotFound", err)
	}
	if err := s.CreateAccountKey(ctx, ca, []byte("key one")); err != nil {
		t.Fatal(err)
	}
	// A second create (a later run that failed to load the account, say)
	// must never overwrite the key the CA knows.
	if err := s.CreateAccountKey(ctx, ca, []byte("key two")); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateAccountKey = %v, want ErrExists", err)
	}
	info := AccountInfo{URL: "https://ca.example/acct/1", Contact: []string{"mailto:a@example.com"}, TermsOfServiceAgreed: true}
	if err := s.SaveAccountInfo(ctx, ca, info); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadAccount(ctx, ca)
	if err != nil {
		t.Fatal(err)
	}
	want := &Account{Directory: ca, KeyPEM: []byte("key one"), Info: info}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadAccount (-want +got):\n%s", diff)
	}
	if err := s.BeginRollover(ctx, ca, []byte("key three")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadAccount(ctx, ca); err != nil || string(got.KeyPEM) != "key one" || string(got.PendingKeyPEM) != "key three" {
		t.Errorf("LoadAccount during rollover = %+v, %v; want key one, pending key three", got, err)
	}
	if err := s.BeginRollover(ctx, ca, []byte("key four")); !errors.Is(err, ErrRolloverPending) {
		t.Errorf("second BeginRollover = %v, want ErrRolloverPending", err)
	}
	if err := s.FinishRollover(ctx, ca); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadAccount(ctx, ca)
	if err != nil || string(got.KeyPEM) != "key three" || got.PendingKeyPEM != nil {
		t.Errorf("LoadAccount after rollover = %q (pending %q), %v; want key three", got.KeyPEM, got.PendingKeyPEM, err)
	}
	old, _ := filepath.Glob(filepath.Join(s.Dir(), "accounts", AccountDirName(ca), "key-*.pem.old"))
	if len(old) != 1 || string(mustRead(t, old[0])) != "key one" {
		t.Errorf("previous account key kept as %v, want one file with key one", old)
	}
	// Another CA has its own account.
	if _, err := s.LoadAccount(ctx, "https://acme-staging-v02.api.letsencrypt.org/directory"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadAccount(other CA) = %v, want ErrNotFound", err)
	}
}

func TestAccountDirName(t *testing.T) {
	urls := []string{
		"https://acme-v02.api.letsencrypt.org/directory",
		"https://acme-staging-v02.api.letsencrypt.org/directory",
		"https://127.0.0.1:14000/dir",
		"https://127.0.0.1:14001/dir",
		"https://ca.example/../../etc/passwd",
		"https://ca.example/a/b",
		"https://ca.example/a_b",
	}
	seen := map[string]string{}
	for _, u := range urls {
		n := AccountDirName(u)
		if !ValidName(n) || strings.Contains(n, "..") {
			t.Errorf("AccountDirName(%q) = %q, not a safe directory name", u, n)
		}
		if prev, dup := seen[n]; dup {
			t.Errorf("AccountDirName(%q) = AccountDirName(%q) = %q", u, prev, n)
		}
		seen[n] = u
	}
	if got, want := AccountDirName(urls[0]), "acme-v02.api.letsencrypt.org_directory-"; !strings.HasPrefix(got, want) {
		t.Errorf("AccountDirName(%q) = %q, want prefix %q", urls[0], got, want)
	}
}

func TestInvalidNames(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "storage"))
	for _, name := range []string{"../x", "..", ".", "", "a/b", "../../storage-escape", ".hidden", `a\b`} {
		if err := s.Commit(ctx, name, fakeVersion("01"), nil); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Commit(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := s.LoadCertificate(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("LoadCertificate(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := s.SaveState(ctx, name, []byte("{}")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("SaveState(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := s.MoveKeyAside(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("MoveKeyAside(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := s.LoadVersion(ctx, "site", "../../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadVersion(../../x) = %v, want ErrNotFound", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files written outside the storage directory: %v", entries)
	}
}

func TestMoveKeyAside(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	v := fakeVersion("0a")
	if err := s.Commit(ctx, "site", v, nil); err != nil {
		t.Fatal(err)
	}
	path, err := s.MoveKeyAside(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	if b := mustRead(t, path); !bytes.Equal(b, v.KeyPEM) {
		t.Errorf("key moved aside = %q, want %q", b, v.KeyPEM)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("moved key mode = %v, %v; want 0600", fi.Mode(), err)
	}
	got, err := s.LoadCertificate(ctx, "site")
	if !errors.Is(err, ErrKeyMovedAside) || got == nil || got.KeyPEM != nil || !bytes.Equal(got.CertPEM, v.CertPEM) {
		t.Errorf("LoadCertificate after MoveKeyAside = %+v, %v; want the certificate without key and ErrKeyMovedAside", got, err)
	}
	aside, err := s.KeysMovedAside(ctx, "site")
	if err != nil || !cmp.Equal(aside, []string{v.ID}) {
		t.Errorf("KeysMovedAside = %v, %v; want [%s]", aside, err, v.ID)
	}
	// A fresh key and certificate replace it.
	if err := s.Commit(ctx, "site", fakeVersion("0b"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadCertificate(ctx, "site"); err != nil || !bytes.Contains(got.KeyPEM, []byte("key 0b")) {
		t.Errorf("LoadCertificate after new version = %v", err)
	}
}

// TestState: the engine's metadata is stored as given, beside the versions
// while there is none, then with the current version.
func TestState(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	m, err := s.LoadState(ctx, "site")
	if err != nil || m != nil {
		t.Fatalf("LoadState before saving = %q, %v; want nil", m, err)
	}
	if err := s.SaveState(ctx, "site", []byte(`{"failures":1}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.LoadState(ctx, "site"); err != nil || string(m) != `{"failures":1}` {
		t.Errorf("LoadState = %q, %v", m, err)
	}
	if v, m, err := s.LoadCurrent(ctx, "site"); !errors.Is(err, ErrNotFound) || v != nil || string(m) != `{"failures":1}` {
		t.Errorf("LoadCurrent without a version = %v, %q, %v; want nil, the state, ErrNotFound", v, m, err)
	}
	if err := s.Commit(ctx, "site", fakeVersion("01"), []byte(`{"issued":1}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.LoadState(ctx, "site"); err != nil || string(m) != `{"issued":1}` {
		t.Errorf("LoadState after Commit = %q, %v", m, err)
	}
	if v, m, err := s.LoadCurrent(ctx, "site"); err != nil || v.Info.Serial != "01" || string(m) != `{"issued":1}` {
		t.Errorf("LoadCurrent = %v, %q, %v; want serial 01 with its state", v, m, err)
	}
	if err := s.SaveState(ctx, "site", []byte(`{"issued":1,"deployed":1}`)); err != nil {
		t.Fatal(err)
	}
	// A Commit without state carries it over.
	if err := s.Commit(ctx, "site", fakeVersion("02"), nil); err != nil {
		t.Fatal(err)
	}
	if m, err := s.LoadState(ctx, "site"); err != nil || string(m) != `{"issued":1,"deployed":1}` {
		t.Errorf("LoadState after Commit without state = %q, %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "certificates", "site", "meta.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("metadata beside the versions after Commit: %v, want none", err)
	}
	big := bytes.Repeat([]byte("x"), MaxStateSize+1)
	if err := s.SaveState(ctx, "site", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("SaveState of MaxStateSize+1 bytes = %v, want ErrTooLarge", err)
	}
}

// TestOpenReadOnly reads a store whose lock another FileStore holds, and
// refuses every write.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := openStore(t, dir)
	if err := w.Commit(ctx, "site", fakeVersion("01"), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.SaveState(ctx, "site", []byte(`{"pending_deploy":true}`)); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatalf("OpenReadOnly while locked: %v", err)
	}
	if v, err := r.LoadCertificate(ctx, "site"); err != nil || v.Info.Serial != "01" {
		t.Errorf("LoadCertificate = %v, %v; want serial 01", v, err)
	}
	if m, err := r.LoadState(ctx, "site"); err != nil || string(m) != `{"pending_deploy":true}` {
		t.Errorf("LoadState = %q, %v; want the saved metadata", m, err)
	}
	for name, write := range map[string]func() error{
		"SaveState":        func() error { return r.SaveState(ctx, "site", []byte("{}")) },
		"Commit":           func() error { return r.Commit(ctx, "site", fakeVersion("02"), nil) },
		"MoveKeyAside":     func() error { _, err := r.MoveKeyAside(ctx, "site"); return err },
		"CreateAccountKey": func() error { return r.CreateAccountKey(ctx, "https://ca.example/dir", []byte("k")) },
	} {
		if err := write(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only store = %v, want ErrReadOnly", name, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := r.LoadState(ctx, "site"); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadState after Close = %v, want ErrClosed", err)
	}
	empty, err := OpenReadOnly(filepath.Join(dir, "missing"), Options{})
	if err != nil {
		t.Fatalf("OpenReadOnly(missing dir) = %v", err)
	}
	if _, err := empty.LoadCertificate(ctx, "site"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadCertificate from a missing dir = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("OpenReadOnly created the directory")
	}
}

// TestCrashResidueRemoved simulates a crash in the middle of a Commit (a
// version partly written, a temporary file): the next Open removes the
// temporary file, the unfinished version is never listed nor current, and
// the next Commit removes it.
func TestCrashResidueRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clock()})
	if err != nil {
		t.Fatal(err)
	}
	v := fakeVersion("01")
	if err := s.Commit(ctx, "site", v, nil); err != nil {
		t.Fatal(err)
	}
	unfinished := filepath.Join(dir, "certificates", "site", "versions", "20261128T130000Z-02")
	if err := os.Mkdir(unfinished, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(unfinished, "key.pem"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Written whole, but the crash came before the switch of current.
	never := filepath.Join(dir, "certificates", "site", "versions", "20261128T140000Z-03")
	if err := os.Mkdir(never, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"key.pem", "cert.pem", "chain.pem", "fullchain.pem", "version.json"} {
		if err := os.WriteFile(filepath.Join(never, f), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, ".tmp", "0123456789abcdef")
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file after Open: %v, want removed", err)
	}
	got, err := s.LoadCertificate(ctx, "site")
	if err != nil || got.ID != v.ID {
		t.Errorf("LoadCertificate = %v, %v; want %s", got, err, v.ID)
	}
	if ids, err := s.Versions(ctx, "site"); err != nil || !cmp.Equal(ids, []string{v.ID}) {
		t.Errorf("Versions = %v, %v; want only %s", ids, err, v.ID)
	}
	v2 := fakeVersion("03")
	if err := s.Commit(ctx, "site", v2, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{unfinished, never} {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("unfinished version %s after the next Commit: %v, want removed", d, err)
		}
	}
}

// lockHelperEnv makes the test binary act as a second acmehook process
// that tries to open the storage directory named in the variable.
const lockHelperEnv = "ACMEHOOK_STORE_LOCK_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockHelperEnv); dir != "" {
		s, err := Open(dir, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			if errors.Is(err, ErrLocked) {
				os.Exit(3)
			}
			os.Exit(1)
		}
		s.Close()
		fmt.Println("opened")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runLockHelper(t *testing.T, dir string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// TestLockAcrossProcesses holds the lock here and checks that another
// process is refused with a message naming this one, then admitted once
// the lock is released.
func TestLockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, out := runLockHelper(t, dir)
	if code != 3 {
		t.Fatalf("second process exit = %d, output %q; want 3 (ErrLocked)", code, out)
	}
	host, _ := os.Hostname()
	for _, want := range []string{"storage is locked by another process", "pid " + strconv.Itoa(os.Getpid()), "on " + host} {
		if !strings.Contains(out, want) {
			t.Errorf("second process error %q does not contain %q", out, want)
		}
	}
	// Within one process too.
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open in the same process = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadState(context.Background(), "site"); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadState after Close = %v, want ErrClosed", err)
	}
	if code, out := runLockHelper(t, dir); code != 0 || !strings.Contains(out, "opened") {
		t.Errorf("after Close, second process exit = %d, output %q; want success", code, out)
	}
}

// TestConcurrentSaves writes many certificates, and several versions of
// one, from parallel goroutines, as the engine does.
func TestConcurrentSaves(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	errs := make(chan error, 40)
	for i := range 20 {
		go func() {
			errs <- s.Commit(ctx, fmt.Sprintf("cert-%02d", i), fakeVersion(fmt.Sprintf("%02x", i)), nil)
		}()
		go func() { errs <- s.Commit(ctx, "shared", fakeVersion(fmt.Sprintf("%02x", 100+i)), nil) }()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	names, err := s.Names(ctx)
	if err != nil || len(names) != 21 {
		t.Fatalf("Names() = %d names, %v; want 21", len(names), err)
	}
	for _, n := range names {
		v, err := s.LoadCertificate(ctx, n)
		if err != nil {
			t.Errorf("LoadCertificate(%s) = %v", n, err)
			continue
		}
		if want := "key " + v.Info.Serial; !bytes.Contains(v.KeyPEM, []byte(want)) {
			t.Errorf("LoadCertificate(%s): key %q does not belong to serial %s", n, v.KeyPEM, v.Info.Serial)
		}
	}
	if ids, _ := s.Versions(ctx, "shared"); len(ids) != DefaultKeep {
		t.Errorf("Versions(shared) = %d, want %d after pruning", len(ids), DefaultKeep)
	}
}

// TestCommitIsOneStep injects a failure at every write point of a Commit
// that carries new metadata: whatever the point, a reader sees the old
// version with the old metadata or the new version with the new metadata,
// never one with the other's (issue 15: a crash between saving metadata and
// switching versions deployed the old certificate under the new state).
func TestCommitIsOneStep(t *testing.T) {
	ctx := context.Background()
	for n := 1; ; n++ {
		dir := t.TempDir()
		s := openStore(t, dir)
		old := fakeVersion("01")
		if err := s.Commit(ctx, "site", old, []byte(`{"for":"01"}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveState(ctx, "site", []byte(`{"for":"01","failures":1}`)); err != nil {
			t.Fatal(err)
		}
		f := &failAt{n: n}
		inject(s, f)
		err := s.Commit(ctx, "site", fakeVersion("02"), []byte(`{"for":"02"}`))
		inject(s, &failAt{})
		if f.point == "" {
			break
		}
		// What the next run reads, through a fresh store.
		s.Close()
		r := openStore(t, dir)
		v, verr := r.LoadCertificate(ctx, "site")
		st, serr := r.LoadState(ctx, "site")
		if verr != nil || serr != nil {
			t.Fatalf("fault %d (%s %s): LoadCertificate = %v, LoadState = %v", n, f.point, f.key, verr, serr)
		}
		want := `{"for":"01","failures":1}`
		if v.Info.Serial == "02" {
			want = `{"for":"02"}`
		}
		if string(st) != want {
			t.Errorf("fault %d (%s %s, Commit = %v): version %s with metadata %s, want %s", n, f.point, f.key, err, v.Info.Serial, st, want)
		}
	}
}

// TestSymlinkedCertificateDirectory: a link planted as a certificate's
// directory is refused; nothing is written into its target.
func TestSymlinkedCertificateDirectory(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "storage")
	s := openStore(t, dir)
	if err := s.Commit(ctx, "other", fakeVersion("01"), nil); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(base, "elsewhere")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "certificates", "site")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "site", fakeVersion("02"), nil); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Commit into a symlinked certificate directory = %v, want ErrUnsafe", err)
	}
	if _, err := s.LoadCertificate(ctx, "site"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("LoadCertificate of a symlinked certificate directory = %v, want ErrUnsafe", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("written into the link's target: %v", entries)
	}
	// The other certificates are listed and read regardless.
	if names, err := s.Names(ctx); err != nil || !cmp.Equal(names, []string{"other"}) {
		t.Errorf("Names = %v, %v; want [other]", names, err)
	}
}

// TestSecretsNamed: every value the layer writes that holds a private key
// is under a key IsSecret claims, so an encrypting wrapper seals them all.
func TestSecretsNamed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	const ca = "https://ca.example/dir"
	pemKey := func(n string) []byte {
		return []byte("-----BEGIN PRIVATE KEY-----\n" + n + "\n-----END PRIVATE KEY-----\n")
	}
	for _, step := range []func() error{
		func() error { return s.CreateAccountKey(ctx, ca, pemKey("one")) },
		func() error { return s.BeginRollover(ctx, ca, pemKey("two")) },
		func() error { return s.FinishRollover(ctx, ca) },
		func() error { return s.BeginRollover(ctx, ca, pemKey("three")) },
		func() error { return s.AbortRollover(ctx, ca) },
		func() error { return s.Commit(ctx, "site", fakeVersion("01"), []byte("{}")) },
		func() error { return s.Commit(ctx, "site", fakeVersion("02"), nil) },
		func() error { _, err := s.MoveKeyAside(ctx, "site"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	found := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if bytes.Contains(mustRead(t, path), []byte("PRIVATE KEY")) {
			found++
			if !IsSecret(filepath.ToSlash(rel)) {
				t.Errorf("%s holds a private key, but IsSecret(%q) = false", path, rel)
			}
		}
		return nil
	})
	// account key, the old one (the refused pending one is gone); two
	// versions' keys (one moved aside).
	if found != 4 {
		t.Errorf("found %d private keys, want 4", found)
	}
	if acct, err := s.LoadAccount(ctx, ca); err != nil || !bytes.Equal(acct.KeyPEM, pemKey("two")) || acct.PendingKeyPEM != nil {
		t.Errorf("account after rollover and an undone one = %+v, %v; want key two, nothing pending", acct, err)
	}
}

// TestStateSetAside: metadata the engine cannot use is kept for inspection
// and out of the way; too large metadata is refused, not read.
func TestStateSetAside(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Commit(ctx, "site", fakeVersion("01"), []byte(`{"truncat`)); err != nil {
		t.Fatal(err)
	}
	path, err := s.SetStateAside(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	if b := mustRead(t, path); string(b) != `{"truncat` {
		t.Errorf("metadata set aside = %q", b)
	}
	if m, err := s.LoadState(ctx, "site"); err != nil || m != nil {
		t.Errorf("LoadState after SetStateAside = %q, %v; want none", m, err)
	}
	v, _ := s.LoadCertificate(ctx, "site")
	huge := filepath.Join(dir, "certificates", "site", "versions", v.ID, "meta.json")
	if err := os.WriteFile(huge, bytes.Repeat([]byte(" "), MaxStateSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadState(ctx, "site"); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "site") {
		t.Errorf("LoadState of %d bytes = %v, want ErrTooLarge naming the certificate", MaxStateSize+1, err)
	}
	if _, err := s.SetStateAside(ctx, "site"); err != nil {
		t.Fatal(err)
	}
	if m, err := s.LoadState(ctx, "site"); err != nil || m != nil {
		t.Errorf("LoadState after setting the large metadata aside = %q, %v", m, err)
	}
}

func TestCapText(t *testing.T) {
	long := strings.Repeat("é", MaxTextSize) // 2 bytes each
	for _, c := range []struct {
		in     string
		cut    bool
		prefix string
	}{
		{"short", false, "short"},
		{strings.Repeat("a", MaxTextSize), false, "aaaa"},
		{strings.Repeat("a", 16<<20), true, "aaaa"},
		{long, true, "éé"},
	} {
		got := CapText(c.in)
		if len(got) > MaxTextSize || !strings.HasPrefix(got, c.prefix) || strings.Contains(got, "[cut:") != c.cut || !utf8.ValidString(got) {
			t.Errorf("CapText(%d bytes) = %d bytes %q…, want at most %d, cut %v", len(c.in), len(got), got[:min(len(got), 20)], MaxTextSize, c.cut)
		}
	}
}

// TestLoadCurrentInfo: the current version's ID, Info and metadata
// without its files, with LoadCurrent's errors: none stored, and a key
// moved aside (found without reading the key).
func TestLoadCurrentInfo(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	if err := s.SaveState(ctx, "site", []byte(`{"failures":1}`)); err != nil {
		t.Fatal(err)
	}
	if v, m, err := s.LoadCurrentInfo(ctx, "site"); !errors.Is(err, ErrNotFound) || v != nil || string(m) != `{"failures":1}` {
		t.Errorf("LoadCurrentInfo without a version = %v, %q, %v; want nil, the state, ErrNotFound", v, m, err)
	}
	want := fakeVersion("01")
	if err := s.Commit(ctx, "site", want, []byte(`{"issued":1}`)); err != nil {
		t.Fatal(err)
	}
	full, _, err := s.LoadCurrent(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	v, m, err := s.LoadCurrentInfo(ctx, "site")
	if err != nil || v.ID != full.ID || v.Info.Serial != "01" || !v.Info.NotAfter.Equal(full.Info.NotAfter) || string(m) != `{"issued":1}` {
		t.Errorf("LoadCurrentInfo = %+v, %q, %v; want version %s, serial 01, its state", v, m, err, full.ID)
	}
	if v != nil && (v.KeyPEM != nil || v.CertPEM != nil || v.ChainPEM != nil) {
		t.Errorf("LoadCurrentInfo read the PEM files")
	}
	if _, err := s.MoveKeyAside(ctx, "site"); err != nil {
		t.Fatal(err)
	}
	if v, _, err := s.LoadCurrentInfo(ctx, "site"); !errors.Is(err, ErrKeyMovedAside) || v == nil || v.ID != full.ID {
		t.Errorf("LoadCurrentInfo after MoveKeyAside = %v, %v; want the version and ErrKeyMovedAside", v, err)
	}
}
