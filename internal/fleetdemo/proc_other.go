//go:build !linux

package main

import "syscall"

// daemonAttr is how a daemon is started: in a process group of its own.
// Without Linux's parent-death signal, a daemon outlives this process if
// it is killed without a chance to stop the fleet (SIGKILL).
func daemonAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// dieWithParent does nothing outside Linux.
func dieWithParent() bool { return false }
