package engine

import "github.com/acmehook/acmehook/engine/luahost"

// ChildMain runs this process as a Lua script host when the engine started
// it as one (the engine runs scripts in its own program re-executed, so a
// script cannot take it down), returning the exit code and true; otherwise
// it returns at once with false. A program using the engine calls it first
// thing in main, and its test binaries in TestMain:
//
//	if code, ok := engine.ChildMain(); ok {
//		os.Exit(code)
//	}
func ChildMain() (code int, ok bool) { return luahost.ChildMain() }
