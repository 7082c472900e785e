//go:build unix

package luahost

import (
	"os/exec"
	"syscall"
)

// killGroup runs cmd in its own process group and kills the whole group
// when its context ends, so a program's children do not outlive it; on
// Linux the program is also killed if the script host dies first.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = childSysProcAttr()
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
