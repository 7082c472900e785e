//go:build !unix

package luahost

import "os/exec"

// killGroup leaves cmd's default cancellation (kill the process) in place.
func killGroup(*exec.Cmd) {}
