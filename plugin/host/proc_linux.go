package host

import "syscall"

// procAttr has the kernel kill the plugin when the host dies (SIGKILL on
// the death of the thread that started it), so that no plugin outlives an
// acmehook killed by SIGKILL or the OOM killer.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
