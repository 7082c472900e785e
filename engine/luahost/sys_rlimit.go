//go:build linux || darwin

package luahost

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// limitAddressSpace lowers this process's soft RLIMIT_AS to limit bytes
// (0: leaves it) and returns the soft limit it had, for the exec
// trampoline to restore, or "" when it left the limit alone. Only the soft
// limit is lowered, so that the trampoline may raise it again; a script
// has no way to.
func limitAddressSpace(limit uint64) (string, error) {
	if limit == 0 {
		return "", nil
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err != nil {
		return "", err
	}
	if rl.Cur <= limit {
		return "", nil
	}
	orig := rl.Cur
	rl.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &rl); err != nil {
		return "", err
	}
	return strconv.FormatUint(orig, 10), nil
}

// execTrampoline restores the soft RLIMIT_AS given in args[0] and
// replaces itself with the program args[1] with argv args[2:]. It runs
// between a script host and a program of acmehook.exec, so that the
// program gets acmehook's own limit rather than the script host's. On
// failure it reports on stderr with execFailed and exits 127.
func execTrampoline(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, execFailed+"usage")
		return 127
	}
	cur, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, execFailed+err.Error())
		return 127
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err == nil {
		rl.Cur = min(cur, rl.Max)
		syscall.Setrlimit(syscall.RLIMIT_AS, &rl)
	}
	err = syscall.Exec(args[1], args[2:], os.Environ())
	fmt.Fprintln(os.Stderr, execFailed+(&os.PathError{Op: "exec", Path: args[1], Err: err}).Error())
	return 127
}

// newPositionFile returns an unlinked temporary file of one position page,
// handed to a script host as its fd 3.
func newPositionFile() (*os.File, error) {
	f, err := os.CreateTemp("", "acmehook-luahost-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	if err := f.Truncate(positionPageSize); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// mapPositionPage maps the position page the Host passed as fd 3, or
// returns nil if there is none.
func mapPositionPage() []byte {
	page, err := syscall.Mmap(3, 0, positionPageSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil
	}
	return page
}
