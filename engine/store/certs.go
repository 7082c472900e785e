package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// File modes of FileBackend: directories and secrets are private to the
// owner; certificates and chains are public data.
const (
	dirMode    = 0o700
	fileMode   = 0o600
	publicMode = 0o644
)

// Names in the layout (docs/storage.md).
const (
	lockName      = "lock"
	accountsDir   = "accounts"
	certsDir      = "certificates"
	versionsDir   = "versions"
	asideDir      = "aside"
	currentLink   = "current"
	keyFile       = "key.pem"
	pendingKey    = "next.key.pem"
	certFile      = "cert.pem"
	chainFile     = "chain.pem"
	fullchainFile = "fullchain.pem"
	versionFile   = "version.json"
	metaFile      = "meta.json"
	accountFile   = "account.json"
)

// DefaultKeep is how many versions per certificate a Store keeps by
// default: the current one and two before it.
const DefaultKeep = 3

// MaxStateSize bounds a certificate's metadata (LoadState, SaveState):
// larger metadata is refused with ErrTooLarge instead of being read whole.
const MaxStateSize = 512 << 10

// MaxTextSize is the most CapText keeps of an error text or detail that
// goes into stored metadata.
const MaxTextSize = 4 << 10

// Options configure a Store. The zero value is usable.
type Options struct {
	// Keep is how many versions per certificate to keep, at least 2 (the
	// current and the previous); 0 means DefaultKeep.
	Keep int
	// Logger receives debug logs of writes; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Used for version
	// IDs and the lock record; it must be safe for concurrent use.
	Now func() time.Time
	// Fence is the lock every write is fenced with (Backend.Apply); nil
	// writes without a fence. Open sets it to the storage lock.
	Fence Lock
}

// Store is the certificate layer over a Backend, written once for every
// backend: ACME accounts per CA directory (a key created only where none
// exists, rollover that keeps the old key and survives a crash), and per
// certificate its versions, the current pointer, keep-last-N, keys moved
// aside and the engine's metadata, stored as bytes the engine owns.
//
// Every write goes through one Backend.Apply, fenced by the Store's lock,
// ordered so that its last operation is the commit point: a crash or an
// error leaves the previous state whole. It is safe for concurrent use:
// operations on one account or certificate are serialised, different ones
// run in parallel.
type Store struct {
	b     Backend
	keep  int
	log   *slog.Logger
	now   func() time.Time
	fence Lock
	keys  *sync.Map // string -> *sync.Mutex, shared by WithFence copies
	close func() error
}

// New returns the certificate layer over b. Close closes b.
func New(b Backend, opts Options) (*Store, error) {
	s := &Store{b: b, keep: opts.Keep, log: opts.Logger, now: opts.Now, fence: opts.Fence, keys: &sync.Map{}, close: b.Close}
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
	return s, nil
}

// Open opens the storage directory dir with a FileBackend (creating it,
// mode 0700), takes its StorageLock, and returns the Store fenced by it. A
// second process gets an error wrapping ErrLocked that names the holder's
// pid, host and start time. Close releases the lock.
func Open(dir string, opts Options) (*Store, error) {
	b, err := OpenFileBackend(dir, FileOptions{Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		return nil, err
	}
	lock, err := b.Lock(context.Background(), StorageLock)
	if err != nil {
		b.Close()
		return nil, err
	}
	opts.Fence = lock
	s, err := New(b, opts)
	if err != nil {
		b.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens dir without taking its lock, for commands that only
// read (acmehook list and explain) while another process, such as the
// daemon, holds the lock. Every write fails with ErrReadOnly. A directory
// that does not exist yet reads as an empty store.
func OpenReadOnly(dir string, opts Options) (*Store, error) {
	b, err := OpenFileBackend(dir, FileOptions{ReadOnly: true, Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		return nil, err
	}
	opts.Keep = 0
	return New(b, opts)
}

// WithFence returns a Store on the same backend whose writes are fenced by
// l instead (a per-certificate lock of a fleet node). Closing it closes the
// backend too; close only one of them.
func (s *Store) WithFence(l Lock) *Store {
	c := *s
	c.fence = l
	return &c
}

// Backend returns the Backend the Store keeps its state in.
func (s *Store) Backend() Backend { return s.b }

// Dir returns the storage directory of a file backend, "" for another.
func (s *Store) Dir() string {
	if fb, ok := s.b.(*FileBackend); ok {
		return fb.Dir()
	}
	return ""
}

// Close releases the lock and closes the backend. The Store is unusable
// afterwards: its methods fail with ErrClosed.
func (s *Store) Close() error { return s.close() }

// lockKey serialises operations on one account or certificate in this
// process; the returned func ends it.
func (s *Store) lockKey(ctx context.Context, key string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, _ := s.keys.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock, nil
}

func (s *Store) apply(ctx context.Context, ops ...Op) error {
	return s.b.Apply(ctx, s.fence, ops)
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

func accountKey(directory, file string) string {
	return accountsDir + "/" + AccountDirName(directory) + "/" + file
}

// accountRecord is account.json.
type accountRecord struct {
	Directory string `json:"directory"`
	AccountInfo
}

// LoadAccount returns the account stored for the CA directory URL, or an
// error wrapping ErrNotFound.
func (s *Store) LoadAccount(ctx context.Context, directory string) (*Account, error) {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return nil, err
	}
	defer done()
	return s.loadAccount(ctx, directory)
}

func (s *Store) loadAccount(ctx context.Context, directory string) (*Account, error) {
	key, err := s.b.Get(ctx, accountKey(directory, keyFile))
	if err != nil {
		return nil, fmt.Errorf("loading account for %s: %w", directory, err)
	}
	acct := &Account{Directory: directory, KeyPEM: key}
	var rec accountRecord
	if err := s.getJSON(ctx, accountKey(directory, accountFile), &rec); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("loading account for %s: %w", directory, err)
	}
	acct.Info = rec.AccountInfo
	acct.PendingKeyPEM, err = s.b.Get(ctx, accountKey(directory, pendingKey))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("loading account for %s: %w", directory, err)
	}
	return acct, nil
}

// CreateAccountKey stores the key of a new account for directory. It fails
// with ErrExists if that CA already has a key: call it before registering
// the account (RFC 8555 §7.3), so a crash afterwards never loses a key the
// CA knows.
func (s *Store) CreateAccountKey(ctx context.Context, directory string, keyPEM []byte) error {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	if len(keyPEM) == 0 {
		return errors.New("storing account key: empty key")
	}
	rec, err := marshalJSON(accountRecord{Directory: directory})
	if err != nil {
		return err
	}
	key := accountKey(directory, keyFile)
	if err := s.apply(ctx, Create(key, keyPEM), Put(accountKey(directory, accountFile), rec)); err != nil {
		return fmt.Errorf("storing account key for %s: %w", directory, err)
	}
	s.log.Debug("stored account key", "directory", directory, "key", key)
	return nil
}

// SaveAccountInfo records the account's metadata (URL, contact ...). The
// key must exist.
func (s *Store) SaveAccountInfo(ctx context.Context, directory string, info AccountInfo) error {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	if _, err := s.b.Stat(ctx, accountKey(directory, keyFile)); err != nil {
		return fmt.Errorf("saving account for %s: %w", directory, err)
	}
	rec, err := marshalJSON(accountRecord{Directory: directory, AccountInfo: info})
	if err != nil {
		return err
	}
	if err := s.apply(ctx, Put(accountKey(directory, accountFile), rec)); err != nil {
		return fmt.Errorf("saving account for %s: %w", directory, err)
	}
	return nil
}

// BeginRollover records the intent of an account key rollover (RFC 8555
// §7.3.5) before the CA hears of it: keyPEM, the new key, is stored beside
// the account key as pending. Then either FinishRollover (the CA accepted
// the new key) or AbortRollover (it did not); after a crash in between,
// LoadAccount returns the pending key in PendingKeyPEM so the engine can ask
// the CA which key it knows. It fails with ErrRolloverPending while another
// rollover is pending, and with ErrNotFound without an account key.
func (s *Store) BeginRollover(ctx context.Context, directory string, keyPEM []byte) error {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	if len(keyPEM) == 0 {
		return errors.New("beginning account key rollover: empty key")
	}
	if _, err := s.b.Stat(ctx, accountKey(directory, keyFile)); err != nil {
		return fmt.Errorf("beginning account key rollover for %s: %w", directory, err)
	}
	err = s.apply(ctx, Create(accountKey(directory, pendingKey), keyPEM))
	if errors.Is(err, ErrExists) {
		return fmt.Errorf("beginning account key rollover for %s: %w", directory, ErrRolloverPending)
	}
	if err != nil {
		return fmt.Errorf("beginning account key rollover for %s: %w", directory, err)
	}
	return nil
}

// FinishRollover makes the pending key the account key and keeps the
// previous one as key-<time>.pem.old beside it. Without a pending key it
// fails with ErrNotFound.
func (s *Store) FinishRollover(ctx context.Context, directory string) error {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	acct, err := s.loadAccount(ctx, directory)
	if err != nil {
		return fmt.Errorf("finishing account key rollover: %w", err)
	}
	if acct.PendingKeyPEM == nil {
		return fmt.Errorf("finishing account key rollover for %s: no pending key: %w", directory, ErrNotFound)
	}
	old := accountKey(directory, "key-"+s.now().UTC().Format("20060102T150405.000000000Z")+".pem.old")
	// The old key is kept before the new one replaces it; the pending one
	// goes last, so a crash leaves the rollover to be finished again.
	err = s.apply(ctx, Create(old, acct.KeyPEM), Put(accountKey(directory, keyFile), acct.PendingKeyPEM),
		Delete(accountKey(directory, pendingKey)))
	if err != nil {
		return fmt.Errorf("finishing account key rollover for %s: %w", directory, err)
	}
	s.log.Debug("rolled over account key", "directory", directory, "previous", old)
	return nil
}

// AbortRollover undoes a pending rollover: the account key stays, and the
// pending key, which the CA refused or does not know (so no account can
// depend on it), is deleted. Without a pending key it does nothing.
func (s *Store) AbortRollover(ctx context.Context, directory string) error {
	done, err := s.lockKey(ctx, "account "+directory)
	if err != nil {
		return err
	}
	defer done()
	_, err = s.b.Stat(ctx, accountKey(directory, pendingKey))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("undoing account key rollover for %s: %w", directory, err)
	}
	if err := s.apply(ctx, Delete(accountKey(directory, pendingKey))); err != nil {
		return fmt.Errorf("undoing account key rollover for %s: %w", directory, err)
	}
	return nil
}

func certKey(name string, parts ...string) string {
	return certsDir + "/" + name + "/" + strings.Join(parts, "/")
}

func versionKey(name, id, file string) string { return certKey(name, versionsDir, id, file) }

// beginCert validates name and serialises with other operations on it.
func (s *Store) beginCert(ctx context.Context, name string) (func(), error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return s.lockKey(ctx, "certificate "+name)
}

// Names lists the certificates that have stored state, sorted: one List of
// the backend, whatever the number of certificates.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	entries, err := s.b.List(ctx, certsDir+"/")
	if err != nil {
		return nil, fmt.Errorf("listing certificates: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e, "/"); ok && ValidName(n) {
			names = append(names, n)
		}
	}
	return names, nil
}

// idRE matches version IDs: no separators, no leading dot.
var idRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-z-]{1,80}$`)

// currentID returns the version "current" points at, or ErrNotFound.
func (s *Store) currentID(ctx context.Context, name string) (string, error) {
	target, err := s.b.Get(ctx, certKey(name, currentLink))
	if err != nil {
		return "", err
	}
	id, ok := strings.CutPrefix(string(target), versionsDir+"/")
	if !ok || !idRE.MatchString(id) {
		return "", fmt.Errorf("unexpected current pointer %q of certificate %s", target, name)
	}
	return id, nil
}

// LoadCertificate returns the current version of name. If its key was
// moved aside the version is returned with a nil KeyPEM and an error
// wrapping ErrKeyMovedAside.
func (s *Store) LoadCertificate(ctx context.Context, name string) (*Version, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	id, err := s.currentID(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s: %w", name, err)
	}
	return s.loadVersion(ctx, name, id)
}

// LoadCurrent returns the current version of name and its metadata (as
// LoadCertificate and LoadState do, reading the current pointer once). With
// no version stored, v is nil, err wraps ErrNotFound and state is the
// metadata saved so far. A key moved aside is reported as by
// LoadCertificate, with the version and the state.
func (s *Store) LoadCurrent(ctx context.Context, name string) (v *Version, state []byte, err error) {
	return s.loadCurrent(ctx, name, true)
}

// LoadCurrentInfo is LoadCurrent without the PEM files: the version has its
// ID and Info (KeyPEM, CertPEM and ChainPEM are nil), the errors are the
// same (a key moved aside is found without reading the key). It is what
// deciding, listing and reporting a certificate need, in half the reads.
func (s *Store) LoadCurrentInfo(ctx context.Context, name string) (v *Version, state []byte, err error) {
	return s.loadCurrent(ctx, name, false)
}

func (s *Store) loadCurrent(ctx context.Context, name string, pems bool) (v *Version, state []byte, err error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	beside := certKey(name, metaFile)
	id, err := s.currentID(ctx, name)
	if errors.Is(err, ErrNotFound) {
		state, serr := s.readState(ctx, beside)
		if serr != nil {
			return nil, nil, fmt.Errorf("loading metadata of %s: %w", name, serr)
		}
		return nil, state, fmt.Errorf("loading certificate %s: %w", name, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loading certificate %s: %w", name, err)
	}
	if state, err = s.readState(ctx, versionKey(name, id, metaFile), beside); err != nil {
		return nil, nil, fmt.Errorf("loading metadata of %s: %w", name, err)
	}
	if !pems {
		v, err = s.loadVersionInfo(ctx, name, id)
		return v, state, err
	}
	v, err = s.loadVersion(ctx, name, id)
	return v, state, err
}

// loadVersionInfo is loadVersion without the PEM files: the key's
// presence is checked with Stat.
func (s *Store) loadVersionInfo(ctx context.Context, name, id string) (*Version, error) {
	v := &Version{ID: id}
	if err := s.getJSON(ctx, versionKey(name, id, versionFile), &v.Info); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	_, err := s.b.Stat(ctx, versionKey(name, id, keyFile))
	if errors.Is(err, ErrNotFound) {
		if _, aerr := s.b.Stat(ctx, certKey(name, asideDir, id+"."+keyFile)); aerr == nil {
			return v, fmt.Errorf("loading certificate %s version %s: %w", name, id, ErrKeyMovedAside)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	return v, nil
}

// LoadVersion returns a given version of name (current or previous).
func (s *Store) LoadVersion(ctx context.Context, name, id string) (*Version, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	if !idRE.MatchString(id) {
		return nil, fmt.Errorf("loading certificate %s version %q: %w", name, id, ErrNotFound)
	}
	return s.loadVersion(ctx, name, id)
}

func (s *Store) loadVersion(ctx context.Context, name, id string) (*Version, error) {
	v := &Version{ID: id}
	var err error
	if err := s.getJSON(ctx, versionKey(name, id, versionFile), &v.Info); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	if v.CertPEM, err = s.b.Get(ctx, versionKey(name, id, certFile)); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	if v.ChainPEM, err = s.b.Get(ctx, versionKey(name, id, chainFile)); err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	v.KeyPEM, err = s.b.Get(ctx, versionKey(name, id, keyFile))
	if errors.Is(err, ErrNotFound) {
		if _, aerr := s.b.Stat(ctx, certKey(name, asideDir, id+"."+keyFile)); aerr == nil {
			return v, fmt.Errorf("loading certificate %s version %s: %w", name, id, ErrKeyMovedAside)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s version %s: %w", name, id, err)
	}
	return v, nil
}

// VersionFiles are the paths of one stored version's files.
type VersionFiles struct {
	Cert, Key, Chain, Fullchain string
}

// Files returns where version id of name keeps its files, for scripts and
// programs that read them (a web server's key and fullchain). Only a file
// backend has files; others return an error. It does not check that the
// version exists.
func (s *Store) Files(name, id string) (VersionFiles, error) {
	if !ValidName(name) {
		return VersionFiles{}, fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	if !idRE.MatchString(id) {
		return VersionFiles{}, fmt.Errorf("certificate %s version %q: %w", name, id, ErrNotFound)
	}
	fb, ok := s.b.(*FileBackend)
	if !ok {
		return VersionFiles{}, fmt.Errorf("certificate %s: the storage keeps no files", name)
	}
	var f VersionFiles
	for _, p := range []struct {
		dst  *string
		file string
	}{{&f.Cert, certFile}, {&f.Key, keyFile}, {&f.Chain, chainFile}, {&f.Fullchain, fullchainFile}} {
		path, err := fb.Path(versionKey(name, id, p.file))
		if err != nil {
			return VersionFiles{}, err
		}
		*p.dst = path
	}
	return f, nil
}

// Versions lists the version IDs of name, oldest first: the current one and
// the complete ones before it, not what a failed or crashed Commit left.
func (s *Store) Versions(ctx context.Context, name string) ([]string, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	cur, err := s.currentID(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing versions of %s: %w", name, err)
	}
	all, err := s.listVersions(ctx, name)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, id := range all {
		if id == cur || id < cur && s.complete(ctx, name, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// listVersions returns every version ID under versions/, complete or not.
func (s *Store) listVersions(ctx context.Context, name string) ([]string, error) {
	entries, err := s.b.List(ctx, certKey(name, versionsDir)+"/")
	if err != nil {
		return nil, fmt.Errorf("listing versions of %s: %w", name, err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e, "/"); ok && idRE.MatchString(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// complete reports whether version id was written whole: its version.json,
// written last, exists.
func (s *Store) complete(ctx context.Context, name, id string) bool {
	_, err := s.b.Stat(ctx, versionKey(name, id, versionFile))
	return err == nil
}

// Commit stores v as a new version of name, with state as the metadata
// that describes it, and makes it current — one step from a reader's point
// of view: the version's files, then its metadata, then version.json, and
// last the switch of the current pointer, all in one Apply. A reader sees
// either the previous version with its metadata or the new one with the new
// metadata, never the new metadata beside the old certificate. A failure or
// crash before the switch leaves the previous version current and whole;
// what it left is removed by the next Commit. A nil state carries the
// current metadata over unchanged. Commit sets v.ID, and prunes versions
// beyond keep-last-N (never the current one).
func (s *Store) Commit(ctx context.Context, name string, v *Version, state []byte) error {
	var mk func(string) ([]byte, error)
	if state != nil {
		mk = func(string) ([]byte, error) { return state, nil }
	}
	return s.CommitFunc(ctx, name, v, mk)
}

// CommitFunc is Commit with the metadata made by state once the new
// version's ID is known, for metadata that names its own version; state
// is called once, before anything is written, and its error fails the
// Commit. A nil state carries the current metadata over unchanged.
func (s *Store) CommitFunc(ctx context.Context, name string, v *Version, state func(id string) ([]byte, error)) error {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return err
	}
	defer done()
	if len(v.KeyPEM) == 0 || len(v.CertPEM) == 0 {
		return fmt.Errorf("saving certificate %s: key and certificate are required", name)
	}
	existing, err := s.listVersions(ctx, name)
	if err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	id := s.versionID(existing, v.Info.Serial)
	var meta []byte
	if state == nil {
		meta, err = s.loadState(ctx, name)
	} else {
		meta, err = state(id)
	}
	if err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	if len(meta) > MaxStateSize {
		return fmt.Errorf("saving certificate %s: metadata of %d bytes: %w", name, len(meta), ErrTooLarge)
	}
	info, err := marshalJSON(v.Info)
	if err != nil {
		return fmt.Errorf("saving certificate %s: %w", name, err)
	}
	// The files of the new version are written as one batch (nothing reads
	// them before version.json marks the version complete), then
	// version.json, then the switch of current.
	ops := []Op{
		Batched(Put(versionKey(name, id, keyFile), v.KeyPEM)),
		Batched(Put(versionKey(name, id, certFile), v.CertPEM)),
		Batched(Put(versionKey(name, id, chainFile), v.ChainPEM)),
		Batched(Put(versionKey(name, id, fullchainFile), v.Fullchain())),
	}
	if len(meta) > 0 {
		ops = append(ops, Batched(Put(versionKey(name, id, metaFile), meta)))
	}
	ops = append(ops,
		Put(versionKey(name, id, versionFile), info),
		Put(certKey(name, currentLink), []byte(versionsDir+"/"+id)), // the commit point
	)
	if err := s.apply(ctx, ops...); err != nil {
		if errors.Is(err, ErrLockLost) {
			// Another holder may be writing: touch nothing.
			return fmt.Errorf("saving certificate %s: %w", name, err)
		}
		wctx := context.WithoutCancel(ctx)
		if cur, cerr := s.currentID(wctx, name); cerr != nil || cur != id {
			// Not current: remove what was written (the next Commit
			// would otherwise).
			s.deleteVersion(wctx, name, id)
			return fmt.Errorf("saving certificate %s: %w", name, err)
		}
		// The switch took effect and only what follows it (syncing its
		// directory) failed: the new version is the one in use.
		s.log.Warn("new certificate version is current, but storing it did not complete", "name", name, "version", id, "err", err)
	}
	v.ID = id
	s.log.Debug("stored certificate version", "name", name, "version", id)
	// The certificate-level metadata of a certificate without a version,
	// or of storage written before metadata moved into versions, is stale
	// now; failures here only log: the new version is safe.
	if err := s.apply(ctx, Delete(certKey(name, metaFile))); err != nil {
		s.log.Warn("removing stale metadata", "name", name, "err", err)
	}
	s.prune(ctx, name, id)
	return nil
}

// versionID makes a new, unused, time-sortable version ID.
func (s *Store) versionID(existing []string, serial string) string {
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
	for i := 2; slices.Contains(existing, id); i++ {
		id = fmt.Sprintf("%s-%d", base, i)
	}
	return id
}

// deleteVersion removes every key of version id.
func (s *Store) deleteVersion(ctx context.Context, name, id string) error {
	files, err := s.b.List(ctx, certKey(name, versionsDir, id)+"/")
	if err != nil {
		return err
	}
	var ops []Op
	for _, f := range files {
		if !strings.HasSuffix(f, "/") {
			ops = append(ops, Delete(versionKey(name, id, f)))
		}
	}
	// version.json first: the version stops counting as complete at once;
	// the other files then go as one batch.
	slices.SortStableFunc(ops, func(a, b Op) int {
		return boolInt(!strings.HasSuffix(a.Key, "/"+versionFile)) - boolInt(!strings.HasSuffix(b.Key, "/"+versionFile))
	})
	for i := range ops {
		ops[i].Batch = !strings.HasSuffix(ops[i].Key, "/"+versionFile)
	}
	return s.apply(ctx, ops...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// prune removes what a failed or crashed Commit left (versions that are
// incomplete, or newer than current and never made current) and the oldest
// versions beyond keep, never the current one. Failures only log: the new
// version is already safe.
func (s *Store) prune(ctx context.Context, name, current string) {
	ids, err := s.listVersions(ctx, name)
	if err != nil {
		s.log.Warn("listing versions to prune", "name", name, "err", err)
		return
	}
	var kept []string
	for _, id := range ids {
		if id == current || id < current && s.complete(ctx, name, id) {
			kept = append(kept, id)
			continue
		}
		s.log.Debug("removing an unfinished version", "name", name, "version", id)
		if err := s.deleteVersion(ctx, name, id); err != nil {
			s.log.Warn("removing an unfinished version", "name", name, "version", id, "err", err)
		}
	}
	for len(kept) > s.keep && kept[0] < current {
		if err := s.deleteVersion(ctx, name, kept[0]); err != nil {
			s.log.Warn("pruning old version", "name", name, "version", kept[0], "err", err)
			return
		}
		kept = kept[1:]
	}
}

// MoveKeyAside moves the current version's private key out of use (for a
// keyCompromise revocation, RFC 8555 §7.6) to aside/<version>.key.pem and
// returns where it now is (a file path with a file backend, else the key).
// The certificate, chain and metadata stay; the copy aside is written
// before the key is removed from the version.
func (s *Store) MoveKeyAside(ctx context.Context, name string) (string, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return "", err
	}
	defer done()
	id, err := s.currentID(ctx, name)
	if err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	src := versionKey(name, id, keyFile)
	key, err := s.b.Get(ctx, src)
	if err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	dst := certKey(name, asideDir, id+"."+keyFile)
	if err := s.apply(ctx, Put(dst, key), Delete(src)); err != nil {
		return "", fmt.Errorf("moving key of %s aside: %w", name, err)
	}
	s.log.Info("moved certificate key aside", "name", name, "version", id, "key", dst)
	if fb, ok := s.b.(*FileBackend); ok {
		return fb.Path(dst)
	}
	return dst, nil
}

// KeysMovedAside lists the versions of name whose key was moved aside.
func (s *Store) KeysMovedAside(ctx context.Context, name string) ([]string, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	entries, err := s.b.List(ctx, certKey(name, asideDir)+"/")
	if err != nil {
		return nil, fmt.Errorf("listing keys of %s moved aside: %w", name, err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e, "."+keyFile); ok && idRE.MatchString(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// stateKey is where the metadata of name lives: in the current version, or
// beside the versions while there is none (and in storage written before
// metadata moved into versions).
func (s *Store) stateKeys(ctx context.Context, name string) (inVersion, beside string, err error) {
	beside = certKey(name, metaFile)
	id, err := s.currentID(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return "", beside, nil
	}
	if err != nil {
		return "", "", err
	}
	return versionKey(name, id, metaFile), beside, nil
}

// LoadState returns the engine's metadata of name: the bytes committed with
// the current version or saved since, nil if none were saved yet. Metadata
// over MaxStateSize is not read: the error wraps ErrTooLarge (see
// SetStateAside).
func (s *Store) LoadState(ctx context.Context, name string) ([]byte, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	st, err := s.loadState(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("loading metadata of %s: %w", name, err)
	}
	return st, nil
}

func (s *Store) loadState(ctx context.Context, name string) ([]byte, error) {
	inVersion, beside, err := s.stateKeys(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.readState(ctx, inVersion, beside)
}

// readState reads the first of keys that exists. A value over
// MaxValueSize is refused by the backend without being read.
func (s *Store) readState(ctx context.Context, keys ...string) ([]byte, error) {
	for _, key := range keys {
		if key == "" {
			continue
		}
		b, err := s.b.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err == nil && len(b) > MaxStateSize {
			err = fmt.Errorf("%w: %s holds %d bytes, more than %d", ErrTooLarge, key, len(b), MaxStateSize)
		}
		return b, err
	}
	return nil, nil
}

// SaveState replaces the engine's metadata of name: in the current version,
// or beside the versions while there is none. It fails with ErrTooLarge
// over MaxStateSize.
func (s *Store) SaveState(ctx context.Context, name string, state []byte) error {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return err
	}
	defer done()
	if len(state) > MaxStateSize {
		return fmt.Errorf("saving metadata of %s: %d bytes: %w", name, len(state), ErrTooLarge)
	}
	inVersion, beside, err := s.stateKeys(ctx, name)
	if err != nil {
		return fmt.Errorf("saving metadata of %s: %w", name, err)
	}
	ops := []Op{Put(beside, state)}
	if inVersion != "" {
		ops = []Op{Put(inVersion, state), Delete(beside)}
	}
	if err := s.apply(ctx, ops...); err != nil {
		return fmt.Errorf("saving metadata of %s: %w", name, err)
	}
	return nil
}

// SetStateAside moves the metadata of name that the engine cannot use
// (corrupt, truncated, too large) out of the way, keeping it for inspection
// as meta.corrupt-<time>.json beside the versions, and returns where it
// went (a file path with a file backend). The engine then rebuilds the
// metadata from the stored versions. Without metadata it returns "".
func (s *Store) SetStateAside(ctx context.Context, name string) (string, error) {
	done, err := s.beginCert(ctx, name)
	if err != nil {
		return "", err
	}
	defer done()
	inVersion, beside, err := s.stateKeys(ctx, name)
	if err != nil {
		return "", fmt.Errorf("setting metadata of %s aside: %w", name, err)
	}
	dst := certKey(name, "meta.corrupt-"+s.now().UTC().Format("20060102T150405.000000000Z")+".json")
	for _, key := range []string{inVersion, beside} {
		if key == "" {
			continue
		}
		if _, err := s.b.Stat(ctx, key); errors.Is(err, ErrNotFound) {
			continue
		}
		b, err := s.rawGet(ctx, key)
		if err != nil {
			return "", fmt.Errorf("setting metadata of %s aside: %w", name, err)
		}
		if err := s.apply(ctx, Put(dst, b), Delete(key)); err != nil {
			return "", fmt.Errorf("setting metadata of %s aside: %w", name, err)
		}
		if fb, ok := s.b.(*FileBackend); ok {
			return fb.Path(dst)
		}
		return dst, nil
	}
	return "", nil
}

// rawGet reads key, cutting a value too large for the backend's Get down to
// what can be set aside.
func (s *Store) rawGet(ctx context.Context, key string) ([]byte, error) {
	b, err := s.b.Get(ctx, key)
	if errors.Is(err, ErrTooLarge) {
		return fmt.Appendf(nil, "(%s was larger than %d bytes: not kept)\n", key, MaxValueSize), nil
	}
	return b, err
}

// CapText returns s cut to at most MaxTextSize bytes (at a character
// boundary) and marked as cut, for error texts and details the engine
// stores in its metadata, so that a runaway error message (a script error of
// megabytes) cannot grow the metadata without bound.
func CapText(s string) string {
	if len(s) <= MaxTextSize {
		return s
	}
	mark := fmt.Sprintf(" … [cut: %d bytes in all]", len(s))
	cut := MaxTextSize - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

func (s *Store) getJSON(ctx context.Context, key string, v any) error {
	b, err := s.b.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return nil
}

func marshalJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", v, err)
	}
	return append(b, '\n'), nil
}

func randHex() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
