// Package webroot solves http-01 challenges (RFC 8555 §8.3) by writing the
// key authorization to <root>/.well-known/acme-challenge/<token>, where an
// existing web server serves it.
//
// Configuration:
//
//	root  = "/var/www/html"                      # default document root
//	roots = { "example.com" = "/srv/example" }   # per-domain document roots
//
// A relative root is relative to the plugin's working directory, which
// acmehook sets to the directory of its configuration file.
//
// The file is written atomically with mode 0644; the directories
// .well-known and acme-challenge are created (0755) when missing and removed
// again once empty: Linger after the last CleanUp in them, or when the
// solver is closed, so that a run of many challenges creates them once. A token that is not strict base64url is
// refused before any path is built, and nothing is written unless the
// directory, with symbolic links resolved, is inside the root.
//
// Files left by a crash are removed by the next start. While it has
// challenges presented in a directory, a plugin process keeps a ledger
// there, .acmehook-webroot-<random>.ledger, locked with flock(2) for as long
// as the process lives: one line per directory it created and per token it
// wrote, each written (and synced) before what it names. New takes the lock
// of every ledger in its roots' challenge directories; one it gets belongs to
// a process that is gone, so it removes the token files listed there whose
// content is still that token's key authorization (token.thumbprint) and
// their temporary files (.acmehook-<token>-N), then the ledger, then the
// directories listed if they are empty. Nothing else is
// removed: not a file it did not write, not a live process's challenge.
package webroot

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Version is the plugin's version.
const Version = "1.0.0"

// Linger is how long a challenge directory's ledger and the directories
// the plugin created stay after the last challenge in them is cleaned up,
// waiting for the next Present (a run of many certificates, or one order's
// identifiers one after the other): each creation and removal of a file
// costs the file system an inode. Close removes them at once.
var Linger = 2 * time.Second

// ErrOutsideRoot is returned when the challenge directory resolves to a
// place outside the document root (a symbolic link pointing away).
var ErrOutsideRoot = errors.New("webroot: challenge directory is outside the document root")

// Config is the plugin's configuration table.
type Config struct {
	// Root is the document root for domains not in Roots.
	Root string `json:"root"`
	// Roots maps a domain (or IP address) to its document root.
	Roots map[string]string `json:"roots"`
}

// Plugin describes the webroot plugin to sdk.Serve.
var Plugin = sdk.Plugin{
	Name:            "webroot",
	Version:         Version,
	ChallengeTypes:  []string{acme.ChallengeHTTP01},
	IdentifierTypes: []string{acme.IdentifierDNS, acme.IdentifierIP},
	New:             func(_ context.Context, cfg sdk.Config) (sdk.Solver, error) { return New(cfg) },
}

// Solver is the webroot solver. Its methods are safe for concurrent use.
type Solver struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// created holds the directories this process created, so CleanUp
	// removes them (and only them) once empty.
	created map[string]bool
	// ledgers are this process's ledgers, by challenge directory.
	ledgers map[string]*ledger
	// dirs is held for reading from creating the directories to writing
	// the file, and for writing while removing empty ones, so that one
	// challenge's CleanUp never removes a directory another's Present is
	// about to write into.
	dirs sync.RWMutex
}

// ledger is a process's record of what it wrote in one challenge
// directory, locked while the process lives (see the package comment).
type ledger struct {
	f       *os.File
	pending map[string]bool // tokens presented and not cleaned up
	// idle, while nothing is pending, retires the ledger after Linger.
	idle *time.Timer
}

// New checks the configuration and returns the solver: every root must be
// an existing directory. A relative root is made absolute against the
// plugin's working directory (the directory of acmehook's configuration
// file).
func New(c sdk.Config) (*Solver, error) {
	var cfg Config
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	var errs []error
	if cfg.Root == "" && len(cfg.Roots) == 0 {
		errs = append(errs, errors.New("root or roots is required"))
	}
	// check returns dir made absolute: a relative path is relative to the
	// working directory, which acmehook sets to its configuration's.
	check := func(key, dir string) string {
		if dir == "" {
			errs = append(errs, fmt.Errorf("%s: empty path", key))
			return ""
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: resolving %q: %w", key, dir, err))
			return ""
		}
		if fi, err := os.Stat(abs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("%s: %s is not a directory", key, abs))
		}
		return abs
	}
	if cfg.Root != "" {
		cfg.Root = check("root", cfg.Root)
	}
	roots := make(map[string]string, len(cfg.Roots))
	for domain, dir := range cfg.Roots {
		roots[strings.ToLower(strings.TrimSuffix(domain, "."))] = check("roots."+domain, dir)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.Roots = roots
	s := &Solver{cfg: cfg, log: c.Log(), created: map[string]bool{}, ledgers: map[string]*ledger{}}
	s.sweep()
	return s, nil
}

// root returns the document root for a domain.
func (s *Solver) root(domain string) (string, error) {
	if r, ok := s.cfg.Roots[strings.ToLower(domain)]; ok {
		return r, nil
	}
	if s.cfg.Root == "" {
		return "", fmt.Errorf("no document root configured for %q", domain)
	}
	return s.cfg.Root, nil
}

// Present writes the key authorization for the challenge's token.
func (s *Solver) Present(ctx context.Context, req *sdk.PresentRequest) (*sdk.PresentResponse, error) {
	c := req.Challenge
	if c.Type != acme.ChallengeHTTP01 {
		return nil, fmt.Errorf("challenge type %q not supported: webroot solves only http-01", c.Type)
	}
	if err := acme.ValidateToken(c.Token); err != nil {
		return nil, err
	}
	if thumb, ok := strings.CutPrefix(c.KeyAuthorization, c.Token+"."); !ok || acme.ValidateToken(thumb) != nil {
		return nil, errors.New("key authorization is not token.thumbprint")
	}
	root, err := s.root(c.Identifier.Value)
	if err != nil {
		return nil, err
	}
	s.dirs.RLock()
	defer s.dirs.RUnlock()
	dir, made, err := s.makeDir(root)
	if err != nil {
		return nil, err
	}
	if err := s.record(dir, made, c.Token); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, c.Token)
	if err := writeFile(path, []byte(c.KeyAuthorization)); err != nil {
		return nil, err
	}
	s.log.Info("wrote http-01 resource", "domain", c.Identifier.Value, "path", path)
	return &sdk.PresentResponse{}, nil
}

// CleanUp removes the challenge's file and the directories Present created
// if they are now empty.
func (s *Solver) CleanUp(ctx context.Context, req *sdk.CleanUpRequest) (*sdk.CleanUpResponse, error) {
	c := req.Challenge
	if err := acme.ValidateToken(c.Token); err != nil {
		return nil, err
	}
	root, err := s.root(c.Identifier.Value)
	if err != nil {
		return nil, err
	}
	dir, err := resolveInside(root, filepath.Join(root, ".well-known", "acme-challenge"))
	if errors.Is(err, fs.ErrNotExist) {
		return &sdk.CleanUpResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, c.Token)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing %s: %w", path, err)
	}
	s.log.Info("removed http-01 resource", "domain", c.Identifier.Value, "path", path)
	s.settle(dir, c.Token)
	return &sdk.CleanUpResponse{}, nil
}

// Close implements sdk.Closer: it removes the ledgers with nothing pending
// and the directories it created that are empty, and releases the other
// ledgers' locks. A ledger still listing a challenge (CleanUp never came)
// is then the next start's to clean up.
func (s *Solver) Close() error {
	s.mu.Lock()
	for dir, l := range s.ledgers {
		if l.idle != nil {
			l.idle.Stop()
		}
		if len(l.pending) == 0 {
			os.Remove(l.f.Name())
		}
		l.f.Close()
		delete(s.ledgers, dir)
	}
	s.mu.Unlock()
	s.removeCreatedDirs()
	return nil
}

// ledgerPrefix and ledgerSuffix frame a ledger's name.
const ledgerPrefix, ledgerSuffix = ".acmehook-webroot-", ".ledger"

// record notes in dir's ledger, created and locked at the first challenge,
// the directories just made (names relative to dir's root: ".well-known",
// ".well-known/acme-challenge") and token, synced before the caller writes
// the token's file.
func (s *Solver) record(dir string, made []string, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.ledgers[dir]
	if l == nil {
		name := filepath.Join(dir, ledgerPrefix+rand.Text()+ledgerSuffix)
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("creating the ledger of %s: %w", dir, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			os.Remove(name)
			return fmt.Errorf("locking %s: %w", name, err)
		}
		l = &ledger{f: f, pending: map[string]bool{}}
		s.ledgers[dir] = l
	}
	if l.idle != nil {
		l.idle.Stop() // in use again; retire checks that under s.mu too
		l.idle = nil
	}
	var b strings.Builder
	for _, d := range made {
		fmt.Fprintf(&b, "dir %s\n", d)
	}
	fmt.Fprintf(&b, "token %s\n", token)
	if _, err := l.f.WriteString(b.String()); err != nil {
		return fmt.Errorf("writing %s: %w", l.f.Name(), err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", l.f.Name(), err)
	}
	l.pending[token] = true
	return nil
}

// settle marks token cleaned up; a ledger with nothing pending is retired
// after Linger unless a challenge comes first.
func (s *Solver) settle(dir, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.ledgers[dir]
	if l == nil {
		return
	}
	delete(l.pending, token)
	if len(l.pending) == 0 && l.idle == nil {
		l.idle = time.AfterFunc(Linger, func() { s.retire(dir, l) })
	}
}

// retire removes the ledger l of dir if nothing is pending in it, then the
// directories this process created that are empty.
func (s *Solver) retire(dir string, l *ledger) {
	s.mu.Lock()
	if s.ledgers[dir] != l || len(l.pending) > 0 {
		s.mu.Unlock()
		return // closed, or in use again
	}
	os.Remove(l.f.Name())
	l.f.Close()
	delete(s.ledgers, dir)
	s.mu.Unlock()
	s.removeCreatedDirs()
}

// maxLedger bounds what sweep reads of a ledger.
const maxLedger = 1 << 20

// sweep removes what crashed processes left in the roots' challenge
// directories (see the package comment). It reports what it removed in the
// log and never fails the start: what it cannot remove stays.
func (s *Solver) sweep() {
	roots := map[string]bool{}
	if s.cfg.Root != "" {
		roots[s.cfg.Root] = true
	}
	for _, r := range s.cfg.Roots {
		roots[r] = true
	}
	for root := range roots {
		dir, err := resolveInside(root, filepath.Join(root, ".well-known", "acme-challenge"))
		if err != nil {
			continue // none, or not ours to touch
		}
		names, _ := filepath.Glob(filepath.Join(dir, ledgerPrefix+"*"+ledgerSuffix))
		for _, name := range names {
			s.sweepLedger(root, dir, name)
		}
	}
}

// sweepLedger cleans up after the ledger at name, in dir below root, if
// its process is gone (its lock can be taken).
func (s *Solver) sweepLedger(root, dir, name string) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return // a live process's
	}
	b, _ := io.ReadAll(io.LimitReader(f, maxLedger))
	var made []string
	removed := 0
	for _, line := range strings.Split(string(b), "\n") {
		kind, value, _ := strings.Cut(line, " ")
		switch {
		case kind == "dir" && (value == ".well-known" || value == ".well-known/acme-challenge"):
			made = append(made, value)
		case kind == "token" && acme.ValidateToken(value) == nil:
			path := filepath.Join(dir, value)
			if ours(path, value) && os.Remove(path) == nil {
				removed++
			}
			// A temporary file of a write the crash interrupted.
			tmps, _ := filepath.Glob(filepath.Join(dir, tempPattern(value)))
			for _, tmp := range tmps {
				if fi, err := os.Lstat(tmp); err == nil && fi.Mode().IsRegular() && os.Remove(tmp) == nil {
					removed++
				}
			}
		}
	}
	os.Remove(name)
	// Deepest first; only while empty.
	slices.SortFunc(made, func(a, b string) int { return len(b) - len(a) })
	for _, d := range made {
		os.Remove(filepath.Join(root, d))
	}
	s.log.Info("removed http-01 resources a stopped run left", "ledger", name, "files", removed)
}

// ours reports whether path is a regular file holding token's key
// authorization (token.thumbprint), as Present wrote it.
func ours(path, token string) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > 1024 {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	thumb, ok := strings.CutPrefix(string(b), token+".")
	return ok && acme.ValidateToken(thumb) == nil
}

// makeDir creates <root>/.well-known/acme-challenge as needed, remembering
// what it created, and returns its resolved path, refusing one outside root,
// and the directories it made (relative to root).
func (s *Solver) makeDir(root string) (string, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, real := root, ""
	var made []string
	for _, name := range []string{".well-known", "acme-challenge"} {
		dir = filepath.Join(dir, name)
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			s.created[dir] = true
			made = append(made, strings.TrimPrefix(dir, root+string(filepath.Separator)))
			// Readable by the web server whatever the umask.
			if err := os.Chmod(dir, 0o755); err != nil {
				return "", nil, fmt.Errorf("setting mode of %s: %w", dir, err)
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return "", nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		// Checked at each level, so that a .well-known linking out of
		// the root is refused before acme-challenge is made through it.
		if real, err = resolveInside(root, dir); err != nil {
			return "", nil, err
		}
	}
	return real, made, nil
}

// removeCreatedDirs removes, deepest first, the directories this process
// created that are empty now. A directory still holding another challenge's
// file stays until that challenge is cleaned up.
func (s *Solver) removeCreatedDirs() {
	s.dirs.Lock()
	defer s.dirs.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	dirs := make([]string, 0, len(s.created))
	for d := range s.created {
		dirs = append(dirs, d)
	}
	// Longer paths are deeper: acme-challenge before .well-known.
	slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
	for _, d := range dirs {
		err := os.Remove(d)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			delete(s.created, d)
		}
	}
}

// resolveInside resolves symbolic links in dir and checks that the result
// is root (resolved) or below it.
func resolveInside(root, dir string) (string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolving root: %w", err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("resolving challenge directory: %w", err)
	}
	rel, err := filepath.Rel(realRoot, realDir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%w: %s resolves to %s", ErrOutsideRoot, dir, realDir)
	}
	return realDir, nil
}

// tempPattern is the os.CreateTemp pattern of token's temporary file.
func tempPattern(token string) string { return ".acmehook-" + token + "-*" }

// writeFile writes data to path atomically with mode 0644: a temporary
// file in the same directory, synced, then renamed over path.
func writeFile(path string, data []byte) error {
	// Named after the token, so that the sweep knows it (tempPattern).
	f, err := os.CreateTemp(filepath.Dir(path), tempPattern(filepath.Base(path)))
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(0o644)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
