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

	"github.com/acmehook/acmehook/engine/renewal"
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

func openStore(t *testing.T, dir string) *FileStore {
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
	if err := s.SaveCertificate(ctx, "site", fakeVersion("01ab")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveMeta(ctx, "site", &Meta{PendingDeploy: true}); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"key.pem": 0o600, "account.json": 0o600, "version.json": 0o600, "meta.json": 0o600, "lock": 0o600,
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
		if err := s.SaveCertificate(ctx, "site", v); err != nil {
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

// faultOps fails the n-th operation (counting from 1) of kind op.
type faultOps struct {
	osOps
	op    string
	n     int
	count int
}

var errInjected = errors.New("injected fault")

func (f *faultOps) hit(op string) error {
	if op != f.op {
		return nil
	}
	f.count++
	if f.count == f.n {
		return errInjected
	}
	return nil
}

func (f *faultOps) writeFile(path string, data []byte, perm os.FileMode) error {
	if err := f.hit("write"); err != nil {
		// Leave a partial file behind, as a crash mid-write would.
		os.WriteFile(path, data[:len(data)/2], perm)
		return err
	}
	return f.osOps.writeFile(path, data, perm)
}

func (f *faultOps) mkdir(path string) error {
	if err := f.hit("mkdir"); err != nil {
		return err
	}
	return f.osOps.mkdir(path)
}

func (f *faultOps) rename(o, n string) error {
	if err := f.hit("rename"); err != nil {
		return err
	}
	return f.osOps.rename(o, n)
}

func (f *faultOps) symlink(t, l string) error {
	if err := f.hit("symlink"); err != nil {
		return err
	}
	return f.osOps.symlink(t, l)
}

// TestFailedSaveKeepsCurrent injects a failure at every step of
// SaveCertificate and checks that the previous version stays current,
// intact, and that nothing half-written remains.
func TestFailedSaveKeepsCurrent(t *testing.T) {
	steps := []struct {
		op string
		n  int
	}{
		{"mkdir", 1},
		{"write", 1}, {"write", 2}, {"write", 3}, {"write", 4}, {"write", 5},
		{"rename", 1}, // staging -> versions/<id>
		{"symlink", 1},
		{"rename", 2}, // the switch of "current"
	}
	for _, st := range steps {
		t.Run(fmt.Sprintf("%s-%d", st.op, st.n), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := openStore(t, dir)
			old := fakeVersion("01")
			if err := s.SaveCertificate(ctx, "site", old); err != nil {
				t.Fatal(err)
			}
			s.ops = &faultOps{op: st.op, n: st.n}
			err := s.SaveCertificate(ctx, "site", fakeVersion("02"))
			if !errors.Is(err, errInjected) {
				t.Fatalf("SaveCertificate with fault = %v, want the injected fault", err)
			}
			got, err := s.LoadCertificate(ctx, "site")
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != old.ID || !bytes.Equal(got.KeyPEM, old.KeyPEM) || !bytes.Equal(got.CertPEM, old.CertPEM) {
				t.Errorf("after failed save current = %s %q, want %s %q", got.ID, got.KeyPEM, old.ID, old.KeyPEM)
			}
			// The files a web server reads through "current" are the old pair.
			cur := filepath.Join(dir, "certificates", "site", "current")
			if b := mustRead(t, filepath.Join(cur, "key.pem")); !bytes.Equal(b, old.KeyPEM) {
				t.Errorf("current/key.pem = %q, want %q", b, old.KeyPEM)
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
				t.Errorf("versions/ = %v, want only %s", names, old.ID)
			}
			leftovers, _ := filepath.Glob(filepath.Join(dir, "certificates", "site", ".current-*"))
			if len(leftovers) != 0 {
				t.Errorf("temporary links left: %v", leftovers)
			}
		})
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
	if err := s.RolloverAccountKey(ctx, ca, []byte("key three")); err != nil {
		t.Fatal(err)
	}
	got, err = s.LoadAccount(ctx, ca)
	if err != nil || string(got.KeyPEM) != "key three" {
		t.Errorf("LoadAccount after rollover = %q, %v; want key three", got.KeyPEM, err)
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
		if err := s.SaveCertificate(ctx, name, fakeVersion("01")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("SaveCertificate(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := s.LoadCertificate(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("LoadCertificate(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := s.SaveMeta(ctx, name, &Meta{}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("SaveMeta(%q) = %v, want ErrInvalidName", name, err)
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
	if err := s.SaveCertificate(ctx, "site", v); err != nil {
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
	m, err := s.LoadMeta(ctx, "site")
	if err != nil || !cmp.Equal(m.KeysMovedAside, []string{v.ID}) {
		t.Errorf("Meta.KeysMovedAside = %v, %v; want [%s]", m.KeysMovedAside, err, v.ID)
	}
	// A fresh key and certificate replace it.
	if err := s.SaveCertificate(ctx, "site", fakeVersion("0b")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadCertificate(ctx, "site"); err != nil || !bytes.Contains(got.KeyPEM, []byte("key 0b")) {
		t.Errorf("LoadCertificate after new version = %v", err)
	}
}

func TestMeta(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	m, err := s.LoadMeta(ctx, "site")
	if err != nil || !cmp.Equal(m, &Meta{}) {
		t.Fatalf("LoadMeta before saving = %+v, %v; want zero Meta", m, err)
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
		m.Events = append(m.Events, Event{Time: at.Add(time.Duration(i) * time.Minute), Name: "issued", Result: "ok"})
	}
	if err := s.SaveMeta(ctx, "site", m); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadMeta(ctx, "site")
	if err != nil {
		t.Fatal(err)
	}
	want := *m
	want.Events = m.Events[5:]
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("LoadMeta (-want +got):\n%s", diff)
	}
}

// TestOpenReadOnly reads a store whose lock another FileStore holds, and
// refuses every write.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := openStore(t, dir)
	if err := w.SaveCertificate(ctx, "site", fakeVersion("01")); err != nil {
		t.Fatal(err)
	}
	if err := w.SaveMeta(ctx, "site", &Meta{PendingDeploy: true}); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatalf("OpenReadOnly while locked: %v", err)
	}
	if v, err := r.LoadCertificate(ctx, "site"); err != nil || v.Info.Serial != "01" {
		t.Errorf("LoadCertificate = %v, %v; want serial 01", v, err)
	}
	if m, err := r.LoadMeta(ctx, "site"); err != nil || !m.PendingDeploy {
		t.Errorf("LoadMeta = %+v, %v; want the saved metadata", m, err)
	}
	for name, write := range map[string]func() error{
		"SaveMeta":         func() error { return r.SaveMeta(ctx, "site", &Meta{}) },
		"SaveCertificate":  func() error { return r.SaveCertificate(ctx, "site", fakeVersion("02")) },
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
	if _, err := r.LoadMeta(ctx, "site"); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadMeta after Close = %v, want ErrClosed", err)
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

// TestCrashResidueRemoved simulates a crash after staging: the next Open
// removes the unfinished version and the current one is untouched.
func TestCrashResidueRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clock()})
	if err != nil {
		t.Fatal(err)
	}
	v := fakeVersion("01")
	if err := s.SaveCertificate(ctx, "site", v); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(dir, "certificates", "site", "versions", ".staging-20261128T130000Z-02")
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, "key.pem"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if _, err := os.Stat(staging); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory after Open: %v, want removed", err)
	}
	got, err := s.LoadCertificate(ctx, "site")
	if err != nil || got.ID != v.ID {
		t.Errorf("LoadCertificate = %v, %v; want %s", got, err, v.ID)
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
	if _, err := s.LoadMeta(context.Background(), "site"); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadMeta after Close = %v, want ErrClosed", err)
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
			errs <- s.SaveCertificate(ctx, fmt.Sprintf("cert-%02d", i), fakeVersion(fmt.Sprintf("%02x", i)))
		}()
		go func() { errs <- s.SaveCertificate(ctx, "shared", fakeVersion(fmt.Sprintf("%02x", 100+i))) }()
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
