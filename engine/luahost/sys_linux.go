package luahost

import "syscall"

// selfExe is the running program, even if its file has since been replaced
// or removed (an upgrade under a running daemon).
const selfExe = "/proc/self/exe"

// childSysProcAttr makes a script host, and each program it starts, die
// with the process that started it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
