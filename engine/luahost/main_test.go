package luahost

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as its own script host, as
// acmehook's main does.
func TestMain(m *testing.M) {
	if code, ok := ChildMain(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
