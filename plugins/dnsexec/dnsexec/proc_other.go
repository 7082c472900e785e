//go:build !linux

package dnsexec

import "syscall"

// procAttr puts the program in a process group of its own.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
