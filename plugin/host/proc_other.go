//go:build !linux

package host

import "syscall"

// procAttr is nil where there is no parent-death signal; plugin/sdk's Serve
// notices its parent's exit itself.
func procAttr() *syscall.SysProcAttr { return nil }
