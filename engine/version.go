package engine

import "runtime/debug"

// Version is acmehook's version. Release builds set it with
// -ldflags "-X github.com/acmehook/acmehook/engine.Version=v1.2.3"; when it
// is empty, BuildVersion falls back to the module version or VCS revision
// recorded by the Go toolchain.
var Version string

// BuildVersion returns Version, or what debug.ReadBuildInfo knows (the main
// module's version, else the VCS revision, with "+dirty" for a modified
// tree), or "devel".
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	return rev + dirty
}
