package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// File modes: directories and secrets are private to the owner;
// certificates and chains are public data.
const (
	dirMode    os.FileMode = 0o700
	fileMode   os.FileMode = 0o600
	publicMode os.FileMode = 0o644
)

// Names of files and directories in the layout (see README.md, "Storage").
const (
	lockName      = "lock"
	accountsDir   = "accounts"
	certsDir      = "certificates"
	versionsDir   = "versions"
	asideDir      = "aside"
	currentLink   = "current"
	keyFile       = "key.pem"
	certFile      = "cert.pem"
	chainFile     = "chain.pem"
	fullchainFile = "fullchain.pem"
	versionFile   = "version.json"
	metaFile      = "meta.json"
	accountFile   = "account.json"
	stagingPrefix = ".staging-"
)

// DefaultKeep is how many versions per certificate FileStore keeps by
// default: the current one and two before it.
const DefaultKeep = 3

// Options configure a FileStore. The zero value is usable.
type Options struct {
	// Keep is how many versions per certificate to keep, at least 2 (the
	// current and the previous); 0 means DefaultKeep.
	Keep int
	// Logger receives debug logs of writes; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Used for version
	// IDs and the lock record; it must be safe for concurrent use.
	Now func() time.Time
}

// FileStore is the Store kept in files under one directory. It holds an
// exclusive lock on the directory from Open until Close. It is safe for
// concurrent use by the goroutines of one process: operations on one
// account or certificate are serialised, different ones run in parallel.
type FileStore struct {
	dir  string
	keep int
	log  *slog.Logger
	now  func() time.Time
	ops  fileOps

	// mu is held shared by every operation and exclusively by Close;
	// keys serialises operations on the same account or certificate, so
	// different certificates are written in parallel.
	mu       sync.RWMutex
	lock     *os.File // nil when read-only
	readOnly bool
	closed   bool
	keys     sync.Map // string -> *sync.Mutex
}

var _ Store = (*FileStore)(nil)

// ErrClosed is returned by a FileStore's methods after Close.
var ErrClosed = errors.New("store: closed")

// Open creates dir if needed (mode 0700), takes its exclusive lock, and
// removes what a crash may have left half-written (staging directories of
// versions that never became current). A second process gets an error
// wrapping ErrLocked that names the holder's pid, host and start time.
func Open(dir string, opts Options) (*FileStore, error) {
	s := &FileStore{dir: dir, keep: opts.Keep, log: opts.Logger, now: opts.Now, ops: osOps{}}
	if s.keep == 0 {
		s.keep = DefaultKeep
	}
	if s.keep < 2 {
		return nil, fmt.Errorf("opening storage: keep must be at least 2, got %d", s.keep)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := ensureDir(dir); err != nil {
		return nil, fmt.Errorf("opening storage: %w", err)
	}
	lock, err := lockFile(filepath.Join(dir, lockName), s.now())
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.cleanStaging(); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening storage: %w", err)
	}
	return s, nil
}

// OpenReadOnly opens dir without taking its lock, for commands that only
// read (acmehook list and explain) while another process, such as the
// daemon, holds the lock. Every write fails with ErrReadOnly. Each file is
// replaced atomically by the writer, so a reader sees whole files; a
// version and its metadata may be one write apart. A directory that does
// not exist yet reads as an empty store.
func OpenReadOnly(dir string, opts Options) (*FileStore, error) {
	s := &FileStore{dir: dir, keep: DefaultKeep, log: opts.Logger, now: opts.Now, ops: osOps{}, readOnly: true}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Dir returns the storage directory.
func (s *FileStore) Dir() string { return s.dir }

// Close releases the lock.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	if s.lock == nil {
		return nil
	}
	err := unlockFile(s.lock)
	s.lock = nil
	return err
}

// begin checks ctx and that the store is open, and serialises with other
// operations on key ("" for none). The returned func ends the operation.
func (s *FileStore) begin(ctx context.Context, key string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	if key == "" {
		return s.mu.RUnlock, nil
	}
	m, _ := s.keys.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return func() { mu.Unlock(); s.mu.RUnlock() }, nil
}

// beginWrite is begin for an operation that writes: it fails with
// ErrReadOnly on a store opened with OpenReadOnly.
func (s *FileStore) beginWrite(ctx context.Context, key string) (func(), error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	return s.begin(ctx, key)
}

// ensureDir creates dir and its parents with mode 0700 and makes sure dir
// itself has that mode (umask and pre-existing directories aside).
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode)
}

func (s *FileStore) cleanStaging() error {
	names, err := filepath.Glob(filepath.Join(s.dir, certsDir, "*", versionsDir, stagingPrefix+"*"))
	if err != nil {
		return err
	}
	for _, n := range names {
		s.log.Debug("removing unfinished version", "path", n)
		if err := os.RemoveAll(n); err != nil {
			return err
		}
	}
	return nil
}

// AccountDirName returns the directory name used for the CA whose directory
// URL is directory: the URL's host and path made safe for a file name,
// followed by a hash of the whole URL so distinct URLs never collide.
func AccountDirName(directory string) string {
	sum := sha256.Sum256([]byte(directory))
	readable := directory
	if u, err := url.Parse(directory); err == nil && u.Host != "" {
		readable = u.Host + u.Path
	}
	var b strings.Builder
	prev := rune(0)
	for _, r := range readable {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' && prev != '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		prev = r
	}
	name := strings.Trim(b.String(), "._")
	if len(name) > 80 {
		name = name[:80]
	}
	return name + "-" + hex.EncodeToString(sum[:4])
}

func (s *FileStore) accountDir(directory string) string {
	return filepath.Join(s.dir, accountsDir, AccountDirName(directory))
}

// accountRecord is account.json.
type accountRecord struct {
	Directory string `json:"directory"`
	AccountInfo
}

// LoadAccount implements Store.
func (s *FileStore) LoadAccount(ctx context.Context, directory string) (*Account, error) {
	done, err := s.begin(ctx, "account "+directory)
	if err != nil {
		return nil, err
	}
	defer done()
	dir := s.accountDir(directory)
	key, err := readFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("loading account for %s: %w", directory, err)
	}
	acct := &Account{Directory: directory, KeyPEM: key}
	var rec accountRecord
	if err := readJSON(filepath.Join(dir, accountFile), &rec); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("loading account for %s: %w", directory, err)
	}
	acct.Info = rec.AccountInfo
	return acct, nil
}

// CreateAccountKey implements Store.
func (s *FileStore) CreateAccountKey(ctx context.Context, directory string, keyPEM []byte) error {
	done, err := s.beginWrite(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	if len(keyPEM) == 0 {
		return errors.New("storing account key: empty key")
	}
	dir := s.accountDir(directory)
	if err := ensureDir(dir); err != nil {
		return fmt.Errorf("storing account key: %w", err)
	}
	path := filepath.Join(dir, keyFile)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("storing account key for %s: %w: %s", directory, ErrExists, path)
	}
	if err := s.ops.writeFile(path, keyPEM, fileMode); err != nil {
		return fmt.Errorf("storing account key: %w", err)
	}
	s.log.Debug("stored account key", "directory", directory, "path", path)
	return s.writeAccountRecord(dir, accountRecord{Directory: directory})
}

// SaveAccountInfo implements Store.
func (s *FileStore) SaveAccountInfo(ctx context.Context, directory string, info AccountInfo) error {
	done, err := s.beginWrite(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	dir := s.accountDir(directory)
	if _, err := os.Stat(filepath.Join(dir, keyFile)); err != nil {
		return fmt.Errorf("saving account for %s: %w", directory, notFound(err))
	}
	return s.writeAccountRecord(dir, accountRecord{Directory: directory, AccountInfo: info})
}

func (s *FileStore) writeAccountRecord(dir string, rec accountRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding account: %w", err)
	}
	if err := s.ops.writeFile(filepath.Join(dir, accountFile), append(b, '\n'), fileMode); err != nil {
		return fmt.Errorf("saving account: %w", err)
	}
	return nil
}

// RolloverAccountKey implements Store. The previous key is kept as
// key-<time>.pem.old beside the new one.
func (s *FileStore) RolloverAccountKey(ctx context.Context, directory string, keyPEM []byte) error {
	done, err := s.beginWrite(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	if len(keyPEM) == 0 {
		return errors.New("rolling over account key: empty key")
	}
	dir := s.accountDir(directory)
	path := filepath.Join(dir, keyFile)
	old, err := readFile(path)
	if err != nil {
		return fmt.Errorf("rolling over account key for %s: %w", directory, err)
	}
	keep := filepath.Join(dir, "key-"+s.now().UTC().Format("20060102T150405.000000000Z")+".pem.old")
	if err := s.ops.writeFile(keep, old, fileMode); err != nil {
		return fmt.Errorf("keeping previous account key: %w", err)
	}
	if err := s.ops.writeFile(path, keyPEM, fileMode); err != nil {
		return fmt.Errorf("storing new account key: %w", err)
	}
	s.log.Debug("rolled over account key", "directory", directory, "previous", keep)
	return nil
}

// beginCert is begin (beginWrite when write) on certificate name, and
// returns the name's directory too.
func (s *FileStore) beginCert(ctx context.Context, name string, write bool) (cdir string, done func(), err error) {
	begin := s.begin
	if write {
		begin = s.beginWrite
	}
	if done, err = begin(ctx, "certificate "+name); err != nil {
		return "", nil, err
	}
	if cdir, err = s.certDir(name); err != nil {
		done()
		return "", nil, err
	}
	return cdir, done, nil
}

func (s *FileStore) certDir(name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return filepath.Join(s.dir, certsDir, name), nil
}

// Names implements Store.
func (s *FileStore) Names(ctx context.Context) ([]string, error) {
	done, err := s.begin(ctx, "")
	if err != nil {
		return nil, err
	}
	defer done()
	entries, err := os.ReadDir(filepath.Join(s.dir, certsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing certificates: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && ValidName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// idRE matches version IDs: no separators, no leading dot.
var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-z-]{1,80}$`)

// currentID returns the version "current" points at.
func currentID(certDir string) (string, error) {
	target, err := os.Readlink(filepath.Join(certDir, currentLink))
	if err != nil {
		return "", notFound(err)
	}
	id := filepath.Base(target)
	if filepath.ToSlash(target) != versionsDir+"/"+id || !idRE.MatchString(id) {
		return "", fmt.Errorf("unexpected current link %q in %s", target, certDir)
	}
	return id, nil
}

// LoadCertificate implements Store.
func (s *FileStore) LoadCertificate(ctx context.Context, name string) (*Version, error) {
	cdir, done, err := s.beginCert(ctx, name, false)
	if err != nil {
		return nil, err
	}
	defer done()
	id, err := currentID(cdir)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s: %w", name, err)
	}
	return s.loadVersion(cdir, name, id)
}

// LoadVersion implements Store.
func (s *FileStore) LoadVersion(ctx context.Context, name, id string) (*Version, error) {
	cdir, done, err := s.beginCert(ctx, name, false)
	if err != nil {
		return nil, err
	}
	defer done()
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("loading certificate %s version %q: %w", name, id, ErrNotFound)
	}
	return s.loadVersion(cdir, name, id)
}

// VersionFiles are the paths of one stored version's files.
type VersionFiles struct {
	Cert, Key, Chain, Fullchain string
}

// Files returns where version id of name keeps its files, for scripts and
// programs that read them (a web server's key and fullchain). It does not
// check that the version exists.
func (s *FileStore) Files(name, id string) (VersionFiles, error) {
	cdir, err := s.certDir(name)
	if err != nil {
		return VersionFiles{}, err
	}
	if !idRE.MatchString(id) {
		return VersionFiles{}, fmt.Errorf("certificate %s version %q: %w", name, id, ErrNotFound)
	}
	vdir := filepath.Join(cdir, versionsDir, id)
	return VersionFiles{
		Cert:      filepath.Join(vdir, certFile),
		Key:       filepath.Join(vdir, keyFile),
		Chain:     filepath.Join(vdir, chainFile),
		Fullchain: filepath.Join(vdir, fullchainFile),
	}, nil
}

func (s *FileStore) loadVersion(cdir, name, id string) (*Version, error) {
	vdir := filepath.Join(cdir, versionsDir, id)
	v := &Version{ID: id}
	var err error
	if v.CertPEM, err = readFile(filepath.Join(vdir, certFile)); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	if v.ChainPEM, err = readFile(filepath.Join(vdir, chainFile)); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	if err := readJSON(filepath.Join(vdir, versionFile), &v.Info); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	v.KeyPEM, err = readFile(filepath.Join(vdir, keyFile))
	if errors.Is(err, ErrNotFound) {
		if _, aerr := os.Stat(filepath.Join(cdir, asideDir, id+"."+keyFile)); aerr == nil {
			return v, fmt.Errorf("loading certificate %s version %s: %w", name, id, ErrKeyMovedAside)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	return v, nil
}

// Versions implements Store.
func (s *FileStore) Versions(ctx context.Context, name string) ([]string, error) {
	cdir, done, err := s.beginCert(ctx, name, false)
	if err != nil {
		return nil, err
	}
	defer done()
	return listVersions(cdir)
}

func listVersions(cdir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(cdir, versionsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing versions: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && idRE.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// SaveCertificate implements Store. It writes every file of the version
// into a staging directory (each file synced), renames the staging
// directory into versions/, syncs, and only then switches the "current"
// symlink by renaming a new link over it. A failure at any step leaves
// the previous version current and untouched; a crash leaves at most an
// unused directory, removed by the next Open.
func (s *FileStore) SaveCertificate(ctx context.Context, name string, v *Version) error {
	cdir, done, err := s.beginCert(ctx, name, true)
	if err != nil {
		return err
	}
	defer done()
	if len(v.KeyPEM) == 0 || len(v.CertPEM) == 0 {
		return fmt.Errorf("saving certificate %s: key and certificate are required", name)
	}
	vroot := filepath.Join(cdir, versionsDir)
	for _, d := range []string{filepath.Join(s.dir, certsDir), cdir, vroot} {
		if err := ensureDir(d); err != nil {
			return fmt.Errorf("saving certificate %s: %w", name, err)
		}
	}
	id := s.versionID(vroot, v.Info.Serial)
	info, err := json.MarshalIndent(v.Info, "", "  ")
	if err != nil {
		return fmt.Errorf("saving certificate %s: encoding version info: %w", name, err)
	}
	staging := filepath.Join(vroot, stagingPrefix+id)
	if err := s.ops.mkdir(staging); err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	final := filepath.Join(vroot, id)
	current := false
	defer func() {
		if !current {
			os.RemoveAll(staging)
			os.RemoveAll(final)
		}
	}()
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, v.KeyPEM, fileMode},
		{certFile, v.CertPEM, publicMode},
		{chainFile, v.ChainPEM, publicMode},
		{fullchainFile, v.Fullchain(), publicMode},
		{versionFile, append(info, '\n'), fileMode},
	}
	for _, f := range files {
		if err := s.ops.writeFile(filepath.Join(staging, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("saving certificate %s: %w", name, err)
		}
	}
	if err := s.ops.rename(staging, final); err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	if err := syncDir(vroot); err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	// Switch "current": a new symlink renamed over the old one is atomic.
	tmpLink := filepath.Join(cdir, "."+currentLink+"-"+randHex())
	if err := s.ops.symlink(versionsDir+"/"+id, tmpLink); err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	if err := s.ops.rename(tmpLink, filepath.Join(cdir, currentLink)); err != nil {
		os.Remove(tmpLink)
		return fmt.Errorf("saving certificate %s: switching current version: %w", name, err)
	}
	current = true
	v.ID = id
	if err := syncDir(cdir); err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	s.log.Debug("stored certificate version", "name", name, "version", id)
	s.prune(cdir, id)
	return nil
}

// versionID makes a new, unused, time-sortable version ID.
func (s *FileStore) versionID(vroot, serial string) string {
	suffix := strings.Map(func(r rune) rune {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return -1
	}, serial)
	if len(suffix) > 40 {
		suffix = suffix[:40]
	}
	if suffix == "" {
		suffix = randHex()
	}
	base := s.now().UTC().Format("20060102T150405Z") + "-" + suffix
	id := base
	for i := 2; ; i++ {
		_, err1 := os.Lstat(filepath.Join(vroot, id))
		_, err2 := os.Lstat(filepath.Join(vroot, stagingPrefix+id))
		if errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) {
			return id
		}
		id = fmt.Sprintf("%s-%d", base, i)
	}
}

// prune removes the oldest versions beyond s.keep, never the current one
// nor any newer than it. Failures only log: the new version is already safe.
func (s *FileStore) prune(cdir, current string) {
	ids, err := listVersions(cdir)
	if err != nil {
		s.log.Warn("listing versions to prune", "dir", cdir, "err", err)
		return
	}
	for len(ids) > s.keep && ids[0] < current {
		if err := os.RemoveAll(filepath.Join(cdir, versionsDir, ids[0])); err != nil {
			s.log.Warn("pruning old version", "dir", cdir, "version", ids[0], "err", err)
			return
		}
		ids = ids[1:]
	}
}

// MoveKeyAside implements Store. The key goes to aside/<version>.key.pem
// (0600) and the version is recorded in Meta.KeysMovedAside.
func (s *FileStore) MoveKeyAside(ctx context.Context, name string) (string, error) {
	cdir, done, err := s.beginCert(ctx, name, true)
	if err != nil {
		return "", err
	}
	defer done()
	id, err := currentID(cdir)
	if err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	adir := filepath.Join(cdir, asideDir)
	if err := ensureDir(adir); err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	src := filepath.Join(cdir, versionsDir, id, keyFile)
	dst := filepath.Join(adir, id+"."+keyFile)
	if err := s.ops.rename(src, dst); err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, notFound(err))
	}
	for _, d := range []string{adir, filepath.Dir(src)} {
		if err := syncDir(d); err != nil {
			return "", fmt.Errorf("moving key of %s aside: %w", name, err)
		}
	}
	m, err := s.loadMeta(cdir)
	if err != nil {
		return dst, fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	if !slices.Contains(m.KeysMovedAside, id) {
		m.KeysMovedAside = append(m.KeysMovedAside, id)
	}
	if err := s.saveMeta(cdir, m); err != nil {
		return dst, fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	s.log.Info("moved certificate key aside", "name", name, "version", id, "path", dst)
	return dst, nil
}

// LoadMeta implements Store.
func (s *FileStore) LoadMeta(ctx context.Context, name string) (*Meta, error) {
	cdir, done, err := s.beginCert(ctx, name, false)
	if err != nil {
		return nil, err
	}
	defer done()
	m, err := s.loadMeta(cdir)
	if err != nil {
		return nil, fmt.Errorf("loading metadata of %s: %w", name, err)
	}
	return m, nil
}

func (s *FileStore) loadMeta(cdir string) (*Meta, error) {
	m := &Meta{}
	if err := readJSON(filepath.Join(cdir, metaFile), m); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return m, nil
}

// SaveMeta implements Store. Only the last MaxEvents events are kept.
func (s *FileStore) SaveMeta(ctx context.Context, name string, m *Meta) error {
	cdir, done, err := s.beginCert(ctx, name, true)
	if err != nil {
		return err
	}
	defer done()
	for _, d := range []string{filepath.Join(s.dir, certsDir), cdir} {
		if err := ensureDir(d); err != nil {
			return fmt.Errorf("saving metadata of %s: %w", name, err)
		}
	}
	if err := s.saveMeta(cdir, m); err != nil {
		return fmt.Errorf("saving metadata of %s: %w", name, err)
	}
	return nil
}

func (s *FileStore) saveMeta(cdir string, m *Meta) error {
	cp := *m
	if n := len(cp.Events); n > MaxEvents {
		cp.Events = cp.Events[n-MaxEvents:]
	}
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding metadata: %w", err)
	}
	return s.ops.writeFile(filepath.Join(cdir, metaFile), append(b, '\n'), fileMode)
}

// readFile reads path; a missing file is ErrNotFound.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, notFound(err)
	}
	return b, nil
}

func readJSON(path string, v any) error {
	b, err := readFile(path)
	if err != nil {
		return err
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	return nil
}

// notFound wraps ErrNotFound around a does-not-exist error.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func randHex() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
