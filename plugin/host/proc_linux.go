package host

import (
	"os/exec"
	"syscall"
)

// procAttr has the kernel kill the plugin when the host dies (SIGKILL on
// the death of the thread that started it), so that no plugin outlives an
// acmehook killed by SIGKILL or the OOM killer. The plugin leads a process
// group of its own, so that killing it (killGroup) also ends what it
// started: a plugin that is a shell script waiting in a child process
// would otherwise keep its standard output open and its exit unseen.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup is cmd's Cancel: SIGKILL to the plugin's process group.
func killGroup(cmd *exec.Cmd) func() error {
	return func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
