//go:build !linux

package luahost

import "syscall"

// selfExe is empty: os.Executable finds the program.
const selfExe = ""

// childSysProcAttr has nothing to add outside Linux: a script host exits
// when its stdin closes with its Host.
func childSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
