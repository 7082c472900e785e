package luahost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

const maxReadSize = 16 << 20

// fileOpts are the options of files.write, files.copy and files.mkdir.
type fileOpts struct {
	mode     fs.FileMode
	hasMode  bool
	uid, gid int // -1: leave as is
}

// fileOptsArg reads {mode = "0640", owner = "root" | 0, group = "ssl-cert" | 0}.
// Lua has no octal literals, so mode must be a string; a number raises.
func fileOptsArg(L *lua.LState, n int) fileOpts {
	o := fileOpts{uid: -1, gid: -1}
	t := L.OptTable(n, nil)
	if t == nil {
		return o
	}
	switch v := t.RawGetString("mode").(type) {
	case *lua.LNilType:
	case lua.LString:
		m, err := strconv.ParseUint(string(v), 8, 32)
		if err != nil || m > 0o7777 {
			L.ArgError(n, fmt.Sprintf("mode %q is not an octal permission like \"0640\"", string(v)))
		}
		o.mode, o.hasMode = fs.FileMode(m)&fs.ModePerm|unixBits(m), true
	default:
		L.ArgError(n, "mode must be an octal string like \"0640\" (Lua has no octal numbers)")
	}
	var err error
	if o.uid, err = idOpt(t.RawGetString("owner"), lookupUser); err != nil {
		L.ArgError(n, err.Error())
	}
	if o.gid, err = idOpt(t.RawGetString("group"), lookupGroup); err != nil {
		L.ArgError(n, err.Error())
	}
	return o
}

// unixBits maps setuid, setgid and sticky from a Unix mode to fs.FileMode.
func unixBits(m uint64) fs.FileMode {
	var f fs.FileMode
	if m&0o4000 != 0 {
		f |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= fs.ModeSticky
	}
	return f
}

func idOpt(v lua.LValue, lookup func(string) (int, error)) (int, error) {
	switch v := v.(type) {
	case *lua.LNilType:
		return -1, nil
	case lua.LNumber:
		if v < 0 || float64(v) != float64(int(v)) {
			return 0, fmt.Errorf("invalid id %v", v)
		}
		return int(v), nil
	case lua.LString:
		if id, err := strconv.Atoi(string(v)); err == nil && id >= 0 {
			return id, nil
		}
		return lookup(string(v))
	}
	return 0, fmt.Errorf("owner and group must be a name or a number, not %s", v.Type())
}

func lookupUser(name string) (int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("looking up user: %w", err)
	}
	return strconv.Atoi(u.Uid)
}

func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("looking up group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// chownCheck refuses ownership changes a non-root process cannot make, so a
// script never silently leaves a file with the wrong owner.
func (o fileOpts) chownCheck() error {
	if os.Geteuid() == 0 {
		return nil
	}
	if o.uid >= 0 && o.uid != os.Geteuid() {
		return fmt.Errorf("setting owner %d: requires root", o.uid)
	}
	if o.gid >= 0 && o.gid != os.Getegid() {
		return fmt.Errorf("setting group %d: requires root", o.gid)
	}
	return nil
}

// files.read(path) -> content | nil, err
func (m *module) fileRead(L *lua.LState) int {
	ctx := m.ctx(L)
	path := L.CheckString(1)
	f, err := os.Open(path)
	if err != nil {
		return fail(L, fmt.Errorf("reading file: %w", err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(ctxReader{ctx, f}, maxReadSize+1))
	if err != nil {
		return fail(L, fmt.Errorf("reading %s: %w", path, err))
	}
	if len(b) > maxReadSize {
		return fail(L, fmt.Errorf("reading %s: larger than %d bytes", path, maxReadSize))
	}
	L.Push(lua.LString(b))
	return 1
}

// files.write(path, content, [opts]) -> true | nil, err. Atomic; mode
// defaults to "0600".
func (m *module) fileWrite(L *lua.LState) int {
	ctx := m.ctx(L)
	path := L.CheckString(1)
	data := L.CheckString(2)
	o := fileOptsArg(L, 3)
	if !o.hasMode {
		o.mode = 0o600
	}
	if err := writeAtomic(ctx, path, strings.NewReader(data), o); err != nil {
		return fail(L, err)
	}
	L.Push(lua.LTrue)
	return 1
}

// files.copy(src, dst, [opts]) -> true | nil, err. dst is replaced
// atomically; mode defaults to src's permissions.
func (m *module) fileCopy(L *lua.LState) int {
	ctx := m.ctx(L)
	src := L.CheckString(1)
	dst := L.CheckString(2)
	o := fileOptsArg(L, 3)
	f, err := os.Open(src)
	if err != nil {
		return fail(L, fmt.Errorf("copying file: %w", err))
	}
	defer f.Close()
	if !o.hasMode {
		fi, err := f.Stat()
		if err != nil {
			return fail(L, fmt.Errorf("copying file: %w", err))
		}
		o.mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	}
	if err := writeAtomic(ctx, dst, f, o); err != nil {
		return fail(L, fmt.Errorf("copying %s: %w", src, err))
	}
	L.Push(lua.LTrue)
	return 1
}

// files.mkdir(path, [opts]) -> true | nil, err. Creates parents as needed.
// A directory it creates gets mode (default "0755"); an existing one is
// only changed when opts set mode, owner or group.
func (m *module) fileMkdir(L *lua.LState) int {
	m.ctx(L)
	path := L.CheckString(1)
	o := fileOptsArg(L, 2)
	if err := o.chownCheck(); err != nil {
		return fail(L, fmt.Errorf("creating directory %s: %w", path, err))
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, fs.ErrNotExist)
	if !o.hasMode {
		o.mode = 0o755
	}
	if err := os.MkdirAll(path, o.mode); err != nil {
		return fail(L, fmt.Errorf("creating directory: %w", err))
	}
	if created || o.hasMode {
		if err := os.Chmod(path, o.mode); err != nil {
			return fail(L, fmt.Errorf("creating directory: %w", err))
		}
	}
	if o.uid >= 0 || o.gid >= 0 {
		if err := os.Chown(path, o.uid, o.gid); err != nil {
			return fail(L, fmt.Errorf("creating directory: %w", err))
		}
	}
	L.Push(lua.LTrue)
	return 1
}

// files.exists(path) -> bool | nil, err
func (m *module) fileExists(L *lua.LState) int {
	m.ctx(L)
	_, err := os.Stat(L.CheckString(1))
	switch {
	case err == nil:
		L.Push(lua.LTrue)
	case errors.Is(err, fs.ErrNotExist):
		L.Push(lua.LFalse)
	default:
		return fail(L, fmt.Errorf("checking file: %w", err))
	}
	return 1
}

// files.remove(path) -> true | nil, err. A missing path is not an error;
// a directory must be empty.
func (m *module) fileRemove(L *lua.LState) int {
	m.ctx(L)
	if err := os.Remove(L.CheckString(1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(L, fmt.Errorf("removing file: %w", err))
	}
	L.Push(lua.LTrue)
	return 1
}

// writeAtomic writes r to a temporary file beside path with o's mode and
// owner, syncs it and renames it over path, then syncs the directory.
func writeAtomic(ctx context.Context, path string, r io.Reader, o fileOpts) (err error) {
	if err := o.chownCheck(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(o.mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if o.uid >= 0 || o.gid >= 0 {
		if err := f.Chown(o.uid, o.gid); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
