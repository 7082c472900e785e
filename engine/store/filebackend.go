//go:build unix

package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafe: the storage directory, or something in it, could be changed
// by someone other than the user acmehook runs as, or is a symbolic link
// where acmehook creates files.
var ErrUnsafe = errors.New("store: unsafe storage")

// tmpDir is where FileBackend writes values before renaming them into
// place; whatever a crash leaves there is removed by the next open.
const tmpDir = ".tmp"

// FileOptions configure a FileBackend. The zero value is usable.
type FileOptions struct {
	// ReadOnly opens without creating anything; every write fails with
	// ErrReadOnly. A directory that does not exist reads as empty.
	ReadOnly bool
	// Logger receives debug logs; nil discards.
	Logger *slog.Logger
	// Now returns the current time for the lock record; nil is time.Now.
	Now func() time.Time
}

// FileBackend is the Backend kept in files below one directory: each key is
// a file at the key's path (an IsLink key is a symbolic link), each lock a
// file taken with flock(2).
//
// It trusts nothing it did not create. The storage directory must belong
// to the user acmehook runs as and must not be writable by group or others
// (like ssh with a key file); the directory itself may be reached through a
// symbolic link (the user's choice), but nothing below it is: every file
// and directory is opened relative to its parent with O_NOFOLLOW, so a
// symbolic link planted as a directory, a value or a lock file is refused
// and its target never touched.
//
// Every write goes to a temporary file in .tmp/ (mode set, synced), is
// renamed into place, and the directory is synced. Directories are 0700,
// values 0600 except certificates (a name ending in ".pem" that IsSecret
// does not claim), 0644.
type FileBackend struct {
	dir      string
	root     int // directory descriptor; -1 if a read-only directory is missing
	tmp      int // .tmp/ descriptor; -1 when read-only
	readOnly bool
	log      *slog.Logger
	now      func() time.Time
	// fault, set by tests, is called at every write point and fails it.
	fault func(point, key string) error

	mu     sync.RWMutex // shared by operations, exclusive by Close
	closed bool
	// dirs is shared by a write from making (or opening) its directory
	// to its rename into it, and exclusive by removeEmpty, so this
	// process's own Deletes never remove a directory between the two
	// (another process's still may: the write then starts again).
	dirs  sync.RWMutex
	lmu   sync.Mutex // guards locks
	locks map[*fileLock]struct{}
}

var _ Backend = (*FileBackend)(nil)

// OpenFileBackend opens the storage directory dir, creating it (0700) unless
// opts.ReadOnly. It refuses a directory owned by another user or writable by
// group or others (an error wrapping ErrUnsafe saying how to fix it), makes
// an existing directory 0700, and removes the temporary files a crash left.
func OpenFileBackend(dir string, opts FileOptions) (*FileBackend, error) {
	b := &FileBackend{dir: dir, root: -1, tmp: -1, readOnly: opts.ReadOnly, log: opts.Logger, now: opts.Now,
		locks: map[*fileLock]struct{}{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if !b.readOnly {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return nil, fmt.Errorf("opening storage: %w", err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if b.readOnly && errors.Is(err, unix.ENOENT) {
			return b, nil
		}
		return nil, fmt.Errorf("opening storage %s: %w", dir, err)
	}
	b.root = fd
	if err := b.checkRoot(); err != nil {
		b.closeFDs()
		return nil, err
	}
	if !b.readOnly {
		if err := b.openTmp(); err != nil {
			b.closeFDs()
			return nil, fmt.Errorf("opening storage %s: %w", dir, err)
		}
		if err := b.sweepOldRelease(); err != nil {
			b.closeFDs()
			return nil, fmt.Errorf("opening storage %s: %w", dir, err)
		}
	}
	return b, nil
}

// sweptMark, a file at the storage's root, records that the residue of the
// releases before this backend has been removed (sweepOldRelease), so that
// later opens do not read every certificate's directory again. Its name
// starts with a dot: it is no key.
const sweptMark = ".old-residue-removed"

// sweepOldRelease removes, once per storage, what a crash of a release
// before FileBackend could leave where this one never writes: unfinished
// versions (certificates/NAME/versions/.staging-ID/), temporary files
// (certificates/NAME/.meta.json.tmp-N, accounts/CA/.account.json.tmp-N and
// the like) and temporary current links (certificates/NAME/.current-HEX).
// Only names of those forms are removed, nothing is followed (a link is
// removed itself, never its target), and a .staging- directory is removed
// only while it holds nothing but files.
func (b *FileBackend) sweepOldRelease() error {
	var st unix.Stat_t
	if err := unix.Fstatat(b.root, sweptMark, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil
	}
	removed := 0
	for _, top := range []string{"certificates", "accounts"} {
		for _, name := range b.subdirs([]string{top}) {
			n, err := b.removeOldTemporaries([]string{top, name}, func(e string) bool {
				return strings.HasPrefix(e, ".") && strings.Contains(e, ".tmp-") || top == "certificates" && strings.HasPrefix(e, ".current-")
			})
			removed += n
			if err != nil {
				return err
			}
			if top != "certificates" {
				continue
			}
			for _, staging := range b.subdirs([]string{top, name, "versions"}) {
				if !strings.HasPrefix(staging, ".staging-") {
					continue
				}
				segs := []string{top, name, "versions", staging}
				n, err := b.removeOldTemporaries(segs, func(string) bool { return true })
				removed += n
				if err != nil {
					return err
				}
				if pfd, err := b.openDir(segs[:3], false); err == nil {
					if err := unix.Unlinkat(pfd, staging, unix.AT_REMOVEDIR); err == nil {
						removed++
					} else {
						b.log.Warn("an older release's unfinished version is not empty; left as it is", "path", filepath.Join(b.dir, filepath.Join(segs...)), "error", err)
					}
					unix.Close(pfd)
				}
			}
		}
	}
	if removed > 0 {
		b.log.Info("removed what a crash of an older release left in the storage", "files", removed)
	}
	fd, err := unix.Openat(b.root, sweptMark, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(fileMode))
	if err != nil {
		return fmt.Errorf("recording the sweep of older residue: %w", err)
	}
	unix.Write(fd, []byte("The residue of acmehook releases before the Backend storage was removed; see docs/storage.md.\n"))
	unix.Close(fd)
	return unix.Fsync(b.root)
}

// subdirs returns the names of the directories in the directory segs (none
// if it is missing or not a directory; links are not followed).
func (b *FileBackend) subdirs(segs []string) []string {
	fd, err := b.openDir(segs, false)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var dirs []string
	for _, n := range dirNames(fd) {
		var st unix.Stat_t
		if unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			dirs = append(dirs, n)
		}
	}
	return dirs
}

// dirNames returns the names in the directory open as fd (none on error);
// fd stays open.
func dirNames(fd int) []string {
	f := os.NewFile(uintptr(dupFD(fd)), "directory")
	if f == nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return names
}

// removeOldTemporaries unlinks the regular files and symbolic links of the
// directory segs whose names match, and returns how many.
func (b *FileBackend) removeOldTemporaries(segs []string, match func(name string) bool) (int, error) {
	fd, err := b.openDir(segs, false)
	if err != nil {
		return 0, nil
	}
	defer unix.Close(fd)
	n := 0
	for _, name := range dirNames(fd) {
		var st unix.Stat_t
		if !match(name) || unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		if typ := st.Mode & unix.S_IFMT; typ != unix.S_IFREG && typ != unix.S_IFLNK {
			continue
		}
		path := filepath.Join(b.dir, filepath.Join(segs...), name)
		b.log.Debug("removing an older release's crash residue", "path", path)
		if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("removing crash residue %s: %w", path, err)
		}
		n++
	}
	if n > 0 {
		unix.Fsync(fd)
	}
	return n, nil
}

// checkRoot refuses a storage directory someone else could change.
func (b *FileBackend) checkRoot() error {
	var st unix.Stat_t
	if err := unix.Fstat(b.root, &st); err != nil {
		return fmt.Errorf("opening storage %s: %w", b.dir, err)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("%w: storage directory %s is owned by uid %d, not by uid %d that acmehook runs as; "+
			"another user could plant files or links in it: chown it to uid %d or choose another storage directory",
			ErrUnsafe, b.dir, st.Uid, uid, uid)
	}
	if perm := os.FileMode(st.Mode) & os.ModePerm; perm&0o022 != 0 {
		return fmt.Errorf("%w: storage directory %s is writable by group or others (mode %04o); "+
			"others could plant files or links in it: run chmod 700 %s", ErrUnsafe, b.dir, perm, b.dir)
	}
	if !b.readOnly && st.Mode&0o077 != 0 {
		if err := unix.Fchmod(b.root, uint32(dirMode)); err != nil {
			return fmt.Errorf("opening storage %s: %w", b.dir, err)
		}
	}
	return nil
}

// openTmp opens .tmp/, creating it, and empties it.
func (b *FileBackend) openTmp() error {
	fd, err := b.openDir([]string{tmpDir}, true)
	if err != nil {
		return err
	}
	b.tmp = fd
	f := os.NewFile(uintptr(dupFD(fd)), filepath.Join(b.dir, tmpDir))
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		b.log.Debug("removing a temporary file left by a crash", "path", filepath.Join(b.dir, tmpDir, n))
		if err := unix.Unlinkat(b.tmp, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing crash residue %s: %w", filepath.Join(b.dir, tmpDir, n), err)
		}
	}
	return nil
}

func dupFD(fd int) int {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return n
}

func (b *FileBackend) closeFDs() {
	if b.tmp >= 0 {
		unix.Close(b.tmp)
		b.tmp = -1
	}
	if b.root >= 0 {
		unix.Close(b.root)
		b.root = -1
	}
}

// Dir returns the storage directory.
func (b *FileBackend) Dir() string { return b.dir }

// Path returns the file that holds key, for programs that read the storage
// directory (a web server's key and certificate). It does not check that
// the key exists.
func (b *FileBackend) Path(key string) (string, error) {
	if !ValidKey(key) {
		return "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return filepath.Join(b.dir, filepath.FromSlash(key)), nil
}

// Close releases the locks taken through b and closes the directory.
func (b *FileBackend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.closed = true
	defer b.mu.Unlock()
	b.lmu.Lock()
	locks := b.locks
	b.locks = map[*fileLock]struct{}{}
	b.lmu.Unlock()
	var errs []error
	for l := range locks {
		errs = append(errs, l.release())
	}
	b.closeFDs()
	return errors.Join(errs...)
}

// noKey is begin's key for an operation that has none to check.
const noKey = "\x00"

// begin starts an operation on key (noKey for none): it checks
// ctx, the key and that b is open. The returned func ends it.
func (b *FileBackend) begin(ctx context.Context, key string, write bool) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if key != noKey && !ValidKey(key) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	if write && b.readOnly {
		return nil, ErrReadOnly
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, ErrClosed
	}
	return b.mu.RUnlock, nil
}

// hit calls the test's fault hook at a write point.
func (b *FileBackend) hit(point, key string) error {
	if b.fault == nil {
		return nil
	}
	return b.fault(point, key)
}

// refused describes a path that is a link or not what acmehook created.
func (b *FileBackend) refused(rel string, what string) error {
	return fmt.Errorf("%w: %s is %s: refusing to follow it (acmehook never creates one there; remove it)",
		ErrUnsafe, filepath.Join(b.dir, filepath.FromSlash(rel)), what)
}

// openDir opens the directory segs below the root, one segment at a time
// with O_NOFOLLOW, so no symbolic link is followed. With create, missing
// directories are made (0700) and their parent synced. The caller closes
// the descriptor. A missing directory without create wraps ErrNotFound.
func (b *FileBackend) openDir(segs []string, create bool) (int, error) {
	if b.root < 0 {
		return -1, fmt.Errorf("%w: %s", ErrNotFound, b.dir)
	}
	rel := "."
	if len(segs) > 0 {
		rel = strings.Join(segs, "/")
	}
	if fd, err := b.openBeneath(rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC); err == nil {
		return fd, nil
	} else if errors.Is(err, unix.ENOENT) && !create {
		return -1, fmt.Errorf("%w: %s", ErrNotFound, filepath.Join(b.dir, filepath.FromSlash(rel)))
	}
	fd, err := unix.Openat(b.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for i, seg := range segs {
		nfd, err := unix.Openat(fd, seg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = b.hit("mkdir", strings.Join(segs[:i+1], "/")); err == nil {
				err = unix.Mkdirat(fd, seg, uint32(dirMode))
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				if err == nil {
					err = unix.Fsync(fd)
				} else {
					err = nil // made meanwhile by another goroutine
				}
				if err == nil {
					nfd, err = unix.Openat(fd, seg, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				}
				if err == nil {
					// Whatever the umask.
					err = unix.Fchmod(nfd, uint32(dirMode))
				}
			}
		}
		unix.Close(fd)
		rel := strings.Join(segs[:i+1], "/")
		switch {
		case errors.Is(err, unix.ENOENT):
			return -1, fmt.Errorf("%w: %s", ErrNotFound, filepath.Join(b.dir, filepath.FromSlash(rel)))
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			return -1, b.notDir(segs[:i+1])
		case err != nil:
			return -1, fmt.Errorf("opening %s: %w", filepath.Join(b.dir, filepath.FromSlash(rel)), err)
		}
		fd = nfd
	}
	return fd, nil
}

// notDir explains why segs is no directory: a symbolic link (refused) or a
// value (then nothing is below it: ErrNotFound).
func (b *FileBackend) notDir(segs []string) error {
	rel := strings.Join(segs, "/")
	st, err := b.lstat(rel)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return fmt.Errorf("%w: %s is a value, not a prefix", ErrNotFound, rel)
	}
	return b.refused(rel, "a symbolic link or not a directory")
}

// split returns key's directory segments and its last segment.
func split(key string) ([]string, string) {
	segs := strings.Split(key, "/")
	return segs[:len(segs)-1], segs[len(segs)-1]
}

func fileModeFor(key string) os.FileMode {
	if strings.HasSuffix(key, ".pem") && !IsSecret(key) {
		return publicMode
	}
	return fileMode
}

// Get implements Backend.
func (b *FileBackend) Get(ctx context.Context, key string) ([]byte, error) {
	done, err := b.begin(ctx, key, false)
	if err != nil {
		return nil, err
	}
	defer done()
	v, err := b.get(key)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return v, nil
}

func (b *FileBackend) get(key string) ([]byte, error) {
	segs, base := split(key)
	if IsLink(key) {
		dfd, err := b.openDir(segs, false)
		if err != nil {
			return nil, err
		}
		defer unix.Close(dfd)
		buf := make([]byte, 1024)
		n, err := unix.Readlinkat(dfd, base, buf)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
		case errors.Is(err, unix.EINVAL):
			return nil, b.refused(key, "not a symbolic link")
		case err != nil:
			return nil, err
		}
		return buf[:n], nil
	}
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := b.openBeneath(key, flags)
	if err != nil {
		// Without openat2, or to say exactly what is wrong: one
		// directory at a time.
		dfd, derr := b.openDir(segs, false)
		if derr != nil {
			return nil, derr
		}
		fd, err = unix.Openat(dfd, base, flags, 0)
		unix.Close(dfd)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	case errors.Is(err, unix.ELOOP):
		return nil, b.refused(key, "a symbolic link")
	case err != nil:
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, b.refused(key, "not a regular file")
	case st.Size > MaxValueSize:
		return nil, fmt.Errorf("%w: %s holds %d bytes, more than %d", ErrTooLarge, filepath.Join(b.dir, key), st.Size, MaxValueSize)
	}
	// Values are replaced whole, never appended to: the size read is
	// the size to read.
	v := make([]byte, st.Size)
	for n := 0; n < len(v); {
		m, err := unix.Read(fd, v[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			return v[:n], nil
		}
		n += m
	}
	return v, nil
}

// openBeneath opens rel below the root in one system call, refusing a
// symbolic link anywhere on the way (openat2 with RESOLVE_NO_SYMLINKS and
// RESOLVE_BENEATH). Any error, including a kernel without openat2, sends
// the caller to the walk one directory at a time, which says exactly what
// is wrong.
func (b *FileBackend) openBeneath(rel string, flags int) (int, error) {
	if b.root < 0 || noOpenat2.Load() {
		return -1, unix.ENOSYS
	}
	fd, err := unix.Openat2(b.root, rel, &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		noOpenat2.Store(true)
	}
	return fd, err
}

// noOpenat2 is set once openat2 turned out to be unavailable.
var noOpenat2 atomic.Bool

// Stat implements Backend.
func (b *FileBackend) Stat(ctx context.Context, key string) (KeyInfo, error) {
	done, err := b.begin(ctx, key, false)
	if err != nil {
		return KeyInfo{}, err
	}
	defer done()
	segs, base := split(key)
	dfd, err := b.openDir(segs, false)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	err = unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return KeyInfo{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return KeyInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		if !IsLink(key) {
			return KeyInfo{}, fmt.Errorf("stat %s: %w", key, b.refused(key, "a symbolic link"))
		}
	case unix.S_IFDIR:
		return KeyInfo{}, fmt.Errorf("stat %s: %w", key, ErrNotFound)
	default:
		return KeyInfo{}, fmt.Errorf("stat %s: %w", key, b.refused(key, "not a regular file"))
	}
	return KeyInfo{Key: key, Size: st.Size, Modified: time.Unix(st.Mtim.Unix())}, nil
}

// List implements Backend.
func (b *FileBackend) List(ctx context.Context, prefix string) ([]string, error) {
	dir := strings.TrimSuffix(prefix, "/")
	if prefix != "" && (dir == prefix || !ValidKey(dir)) {
		return nil, fmt.Errorf("%w: list prefix %q is not a key followed by /", ErrInvalidKey, prefix)
	}
	done, err := b.begin(ctx, noKey, false)
	if err != nil {
		return nil, err
	}
	defer done()
	var segs []string
	if dir != "" {
		segs = strings.Split(dir, "/")
	}
	dfd, err := b.openDir(segs, false)
	if errors.Is(err, ErrNotFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	f := os.NewFile(uintptr(dfd), filepath.Join(b.dir, dir))
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	out := []string{}
	for _, e := range entries {
		name := e.Name()
		if !ValidKey(name) {
			continue // .tmp and a backend's own names; nothing a key can be
		}
		switch t := e.Type(); {
		case t.IsDir():
			out = append(out, name+"/")
		case t.IsRegular():
			out = append(out, name)
		case t&os.ModeSymlink != 0 && IsLink(name):
			out = append(out, name)
		default:
			b.log.Warn("ignoring what acmehook did not create in its storage", "path", filepath.Join(b.dir, dir, name), "type", t.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Put implements Backend.
func (b *FileBackend) Put(ctx context.Context, key string, value []byte) error {
	done, err := b.begin(ctx, key, true)
	if err != nil {
		return err
	}
	defer done()
	if err := b.write(key, value, false); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// Delete implements Backend.
func (b *FileBackend) Delete(ctx context.Context, key string) error {
	done, err := b.begin(ctx, key, true)
	if err != nil {
		return err
	}
	defer done()
	if err := b.remove(key); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	return nil
}

// Apply implements Backend: the operations one after the other, each
// durable before the next, except that a run of Batch operations is
// renamed (or unlinked) into place one after the other and then each
// directory it changed is synced once, before the next operation.
func (b *FileBackend) Apply(ctx context.Context, lock Lock, ops []Op) error {
	done, err := b.begin(ctx, noKey, true)
	if err != nil {
		return err
	}
	defer done()
	for _, op := range ops {
		if !ValidKey(op.Key) {
			return fmt.Errorf("%w: %q", ErrInvalidKey, op.Key)
		}
		if op.Kind != OpPut && op.Kind != OpCreate && op.Kind != OpDelete {
			return fmt.Errorf("store: applying %s to %s: unknown operation", op.Kind, op.Key)
		}
	}
	if lock != nil {
		l, ok := lock.(*fileLock)
		if !ok || l.b != b || !l.held() {
			return fmt.Errorf("%w: %s", ErrLockLost, lock.Name())
		}
	}
	for _, op := range ops {
		if op.Kind != OpCreate {
			continue
		}
		if _, err := b.lstat(op.Key); err == nil {
			return fmt.Errorf("creating %s: %w", op.Key, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("creating %s: %w", op.Key, err)
		}
	}
	for i := 0; i < len(ops); {
		if err := ctx.Err(); err != nil {
			return err
		}
		// The last operation is never part of a run.
		end := i
		for end < len(ops)-1 && ops[end].Batch {
			end++
		}
		if end > i {
			if err := b.applyRun(ops[i:end]); err != nil {
				return err
			}
			i = end
			continue
		}
		op := ops[i]
		var err error
		switch op.Kind {
		case OpPut, OpCreate:
			err = b.write(op.Key, op.Value, op.Kind == OpCreate)
		case OpDelete:
			err = b.remove(op.Key)
		}
		if err != nil {
			return fmt.Errorf("applying %s %s: %w", op.Kind, op.Key, err)
		}
		i++
	}
	return nil
}

// applyRun applies a run of Batch operations: each write's temporary file
// synced and renamed into place (each delete unlinked) in order, then every
// directory they changed synced once, then the directories the deletes
// left empty removed.
func (b *FileBackend) applyRun(ops []Op) error {
	type changed struct {
		fd  int
		key string // the last key changed in the directory
	}
	var dirs []changed // in the order first changed
	byDir := map[string]int{}
	defer func() {
		for _, d := range dirs {
			unix.Close(d.fd)
		}
	}()
	var emptied [][]string
	for _, op := range ops {
		var dfd int
		var err error
		switch op.Kind {
		case OpPut, OpCreate:
			dfd, err = b.place(op.Key, op.Value, op.Kind == OpCreate)
		case OpDelete:
			var segs []string
			if dfd, segs, err = b.unlink(op.Key); segs != nil {
				emptied = append(emptied, segs)
			}
		}
		if err != nil {
			return fmt.Errorf("applying %s %s: %w", op.Kind, op.Key, err)
		}
		if dfd < 0 {
			continue // a delete of a missing key changed nothing
		}
		dir := path.Dir(op.Key)
		if i, ok := byDir[dir]; ok {
			unix.Close(dirs[i].fd)
			dirs[i] = changed{dfd, op.Key}
			continue
		}
		byDir[dir] = len(dirs)
		dirs = append(dirs, changed{dfd, op.Key})
	}
	for _, d := range dirs {
		err := b.hit("dirsync", d.key)
		if err == nil {
			err = unix.Fsync(d.fd)
		}
		if err != nil {
			return fmt.Errorf("syncing the directory of %s: %w", d.key, err)
		}
	}
	for _, segs := range emptied {
		b.removeEmpty(segs)
	}
	return nil
}

func (b *FileBackend) lstat(key string) (unix.Stat_t, error) {
	var st unix.Stat_t
	segs, base := split(key)
	dfd, err := b.openDir(segs, false)
	if err != nil {
		return st, err
	}
	defer unix.Close(dfd)
	err = unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return st, ErrNotFound
	}
	return st, err
}

// write stores value under key: a temporary file in .tmp/ (or a symbolic
// link for an IsLink key), synced, renamed (create: linked, so an existing
// key is never replaced) into place, the directory synced.
func (b *FileBackend) write(key string, value []byte, create bool) error {
	dfd, err := b.place(key, value, create)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := b.hit("dirsync", key); err != nil {
		return err
	}
	return unix.Fsync(dfd)
}

// place is write up to the sync of the directory: it returns the
// directory's descriptor, which the caller syncs and closes.
func (b *FileBackend) place(key string, value []byte, create bool) (int, error) {
	if len(value) > MaxValueSize {
		return -1, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(value), MaxValueSize)
	}
	link := IsLink(key)
	if link && !ValidKey(string(value)) {
		return -1, fmt.Errorf("%w: link value %q", ErrInvalidKey, value)
	}
	tmp := randHex()
	if err := b.hit("create", key); err != nil {
		return -1, err
	}
	if link {
		if err := unix.Symlinkat(string(value), b.tmp, tmp); err != nil {
			return -1, err
		}
	} else if err := b.writeTmp(tmp, key, value); err != nil {
		unix.Unlinkat(b.tmp, tmp, 0)
		return -1, err
	}
	segs, base := split(key)
	var err error
	// A Delete of another process that empties a directory removes it,
	// possibly between this write making (or finding) it and renaming
	// into it: then the write starts again from the root, a bounded
	// number of times. This process's own Deletes wait (dirs).
	for range 10 {
		var dfd int
		var hit bool // a fault injected before the rename
		b.dirs.RLock()
		dfd, err = b.openDir(segs, true)
		if err == nil {
			if err = b.hit("rename", key); err != nil {
				hit = true
			} else if create {
				err = unix.Linkat(b.tmp, tmp, dfd, base, 0)
				if errors.Is(err, unix.EEXIST) {
					err = ErrExists
				}
				if err == nil {
					unix.Unlinkat(b.tmp, tmp, 0) // linked: the name in .tmp/ goes
				}
			} else {
				err = unix.Renameat(b.tmp, tmp, dfd, base)
			}
			if err != nil {
				unix.Close(dfd)
			}
		}
		b.dirs.RUnlock()
		switch {
		case err == nil:
			return dfd, nil
		case hit:
			unix.Unlinkat(b.tmp, tmp, 0)
			b.removeEmpty(segs)
			return -1, err
		case errors.Is(err, ErrNotFound) && dfd < 0, errors.Is(err, unix.ENOENT):
			continue
		}
		if dfd < 0 {
			unix.Unlinkat(b.tmp, tmp, 0)
			return -1, err
		}
		break
	}
	unix.Unlinkat(b.tmp, tmp, 0)
	b.removeEmpty(segs) // what this write may have created in vain
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("%w: %s is a directory", ErrExists, key)
	}
	return -1, err
}

func (b *FileBackend) writeTmp(tmp, key string, value []byte) error {
	mode := fileModeFor(key)
	fd, err := unix.Openat(b.tmp, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode))
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(b.dir, tmpDir, tmp))
	defer f.Close()
	if err := f.Chmod(mode); err != nil { // whatever the umask
		return err
	}
	if err := b.hit("write", key); err != nil {
		f.Write(value[:len(value)/2]) // as a crash mid-write would leave it
		return err
	}
	if _, err := f.Write(value); err != nil {
		return err
	}
	if err := b.hit("sync", key); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// remove deletes key (a missing one is no error), then the directories it
// leaves empty, so List never shows an empty prefix.
func (b *FileBackend) remove(key string) error {
	dfd, segs, err := b.unlink(key)
	if err != nil || dfd < 0 {
		return err
	}
	if err = b.hit("dirsync", key); err == nil {
		err = unix.Fsync(dfd)
	}
	unix.Close(dfd)
	if err != nil {
		return err
	}
	b.removeEmpty(segs)
	return nil
}

// unlink is remove up to the sync of the directory: if it removed key, it
// returns the directory's descriptor, which the caller syncs and closes,
// and the directory's segments, to remove once empty; otherwise -1.
func (b *FileBackend) unlink(key string) (int, []string, error) {
	segs, base := split(key)
	dfd, err := b.openDir(segs, false)
	if errors.Is(err, ErrNotFound) {
		return -1, nil, nil
	}
	if err != nil {
		return -1, nil, err
	}
	if err = b.hit("unlink", key); err == nil {
		err = unix.Unlinkat(dfd, base, 0)
		if err == nil {
			return dfd, segs, nil
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
			err = nil // missing, or a prefix rather than a key
		}
	}
	unix.Close(dfd)
	return -1, nil, err
}

// removeEmpty removes the directory segs and its parents while they are
// empty, so that a prefix without keys is not listed.
func (b *FileBackend) removeEmpty(segs []string) {
	b.dirs.Lock()
	defer b.dirs.Unlock()
	for i := len(segs); i > 0; i-- {
		pfd, err := b.openDir(segs[:i-1], false)
		if err != nil {
			return
		}
		err = unix.Unlinkat(pfd, segs[i-1], unix.AT_REMOVEDIR)
		if err == nil {
			unix.Fsync(pfd)
		}
		unix.Close(pfd)
		if err != nil {
			break // not empty: a key is still below it
		}
	}
}

// lockPath is where the lock called name lives: "lock" for StorageLock (as
// before there were other locks), locks/<name> for others.
func lockPath(name string) string {
	if name == StorageLock {
		return lockName
	}
	return "locks/" + name
}

// Lock implements Backend with flock(2) on a lock file (0600) that records
// the holder and the fencing token. The kernel releases the lock when the
// process exits, so a crashed holder never leaves it taken; the token is
// the previous holder's plus one.
func (b *FileBackend) Lock(ctx context.Context, name string) (Lock, error) {
	if !ValidKey(name) {
		return nil, fmt.Errorf("%w: lock name %q", ErrInvalidKey, name)
	}
	done, err := b.begin(ctx, name, true)
	if err != nil {
		return nil, err
	}
	defer done()
	rel := lockPath(name)
	segs, base := split(rel)
	dfd, err := b.openDir(segs, true)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", name, err)
	}
	fd, err := unix.Openat(dfd, base, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(fileMode))
	unix.Close(dfd)
	path := filepath.Join(b.dir, filepath.FromSlash(rel))
	if errors.Is(err, unix.ELOOP) {
		return nil, b.refused(rel, "a symbolic link")
	}
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != uint32(os.Geteuid()) {
		f.Close()
		return nil, b.refused(rel, "not a regular file of this user")
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s): %s", ErrLocked, path, describeHolder(f))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	var prev LockHolder
	if old, err := io.ReadAll(io.NewSectionReader(f, 0, 4096)); err == nil {
		json.NewDecoder(bytes.NewReader(old)).Decode(&prev)
	}
	host, _ := os.Hostname()
	h := LockHolder{PID: os.Getpid(), Hostname: host, Started: b.now().UTC(), Token: prev.Token + 1}
	rec, _ := json.Marshal(h)
	rec = append(rec, '\n')
	// Overwrite, then cut what an earlier holder left: a process reading
	// meanwhile never finds the file empty (describeHolder reads the first
	// JSON value and ignores a stale tail).
	if err := unix.Fchmod(fd, uint32(fileMode)); err == nil {
		if _, err = f.WriteAt(rec, 0); err == nil {
			if err = f.Truncate(int64(len(rec))); err == nil {
				err = f.Sync()
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("recording lock holder: %w", err)
		}
	}
	l := &fileLock{b: b, name: name, token: h.Token, f: f, done: make(chan struct{})}
	b.lmu.Lock()
	b.locks[l] = struct{}{}
	b.lmu.Unlock()
	return l, nil
}

// fileLock is a FileBackend's Lock.
type fileLock struct {
	b     *FileBackend
	name  string
	token uint64

	mu   sync.Mutex
	f    *os.File // nil once released
	done chan struct{}
}

func (l *fileLock) Name() string          { return l.name }
func (l *fileLock) Token() uint64         { return l.token }
func (l *fileLock) Done() <-chan struct{} { return l.done }

func (l *fileLock) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f != nil
}

// Unlock implements Lock.
func (l *fileLock) Unlock(ctx context.Context) error {
	l.b.lmu.Lock()
	delete(l.b.locks, l)
	l.b.lmu.Unlock()
	return l.release()
}

func (l *fileLock) release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	close(l.done)
	if err != nil {
		return fmt.Errorf("unlocking %s: %w", l.name, err)
	}
	return nil
}
