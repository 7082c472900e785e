package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// daemonAttr is how a daemon is started: in a process group of its own
// (Kill takes it down with its plugin, as when a machine dies) and killed
// by the kernel when this process dies, however it dies (SIGKILL, a
// panic, a closed pipe): nothing of the fleet outlives it. (The signal
// follows the thread that started the daemon; Go ends a thread only when
// a goroutine locked to it returns, which nothing here does.)
func daemonAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// dieWithParent has this process receive SIGTERM when its parent dies
// (`go run`, killed), so that it stops its fleet as on Ctrl-C. It
// reports whether the parent was gone already.
func dieWithParent() bool {
	ppid := unix.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0); err != nil {
		return false
	}
	return unix.Getppid() != ppid
}
