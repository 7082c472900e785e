//go:build !(linux || darwin)

package luahost

import (
	"errors"
	"fmt"
	"os"
)

// limitAddressSpace limits nothing on this system: a script host runs
// under acmehook's own limit.
func limitAddressSpace(uint64) (string, error) { return "", nil }

// execTrampoline is never used here: limitAddressSpace lowers nothing.
func execTrampoline([]string) int {
	fmt.Fprintln(os.Stderr, execFailed+"not supported on this system")
	return 127
}

// newPositionFile: no shared page here; a crashed script host's position
// is unknown.
func newPositionFile() (*os.File, error) { return nil, errors.ErrUnsupported }

func mapPositionPage() []byte { return nil }
