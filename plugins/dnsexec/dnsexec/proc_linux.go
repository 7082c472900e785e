package dnsexec

import "syscall"

// procAttr puts the program in a process group of its own and has the
// kernel kill it if the plugin dies (acmehook killed, and the plugin with
// it).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
