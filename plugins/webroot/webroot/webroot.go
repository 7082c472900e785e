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
// again by CleanUp once empty. A token that is not strict base64url is
// refused before any path is built, and nothing is written unless the
// directory, with symbolic links resolved, is inside the root.
package webroot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Version is the plugin's version.
const Version = "1.0.0"

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
	// dirs is held for reading from creating the directories to writing
	// the file, and for writing while removing empty ones, so that one
	// challenge's CleanUp never removes a directory another's Present is
	// about to write into.
	dirs sync.RWMutex
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
	return &Solver{cfg: cfg, log: c.Log(), created: map[string]bool{}}, nil
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
	dir, err := s.makeDir(root)
	if err != nil {
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
	s.removeCreatedDirs()
	return &sdk.CleanUpResponse{}, nil
}

// makeDir creates <root>/.well-known/acme-challenge as needed, remembering
// what it created, and returns its resolved path, refusing one outside root.
func (s *Solver) makeDir(root string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, real := root, ""
	for _, name := range []string{".well-known", "acme-challenge"} {
		dir = filepath.Join(dir, name)
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			s.created[dir] = true
			// Readable by the web server whatever the umask.
			if err := os.Chmod(dir, 0o755); err != nil {
				return "", fmt.Errorf("setting mode of %s: %w", dir, err)
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return "", fmt.Errorf("creating %s: %w", dir, err)
		}
		// Checked at each level, so that a .well-known linking out of
		// the root is refused before acme-challenge is made through it.
		if real, err = resolveInside(root, dir); err != nil {
			return "", err
		}
	}
	return real, nil
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

// writeFile writes data to path atomically with mode 0644: a temporary
// file in the same directory, synced, then renamed over path.
func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".acmehook-*")
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
