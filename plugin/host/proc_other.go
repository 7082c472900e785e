//go:build !linux

package host

import (
	"os/exec"
	"syscall"
)

// procAttr is nil where there is no parent-death signal; plugin/sdk's Serve
// notices its parent's exit itself.
func procAttr() *syscall.SysProcAttr { return nil }

// killGroup is cmd's Cancel: the plugin process alone.
func killGroup(cmd *exec.Cmd) func() error {
	return func() error { return cmd.Process.Kill() }
}
