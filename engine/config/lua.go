package config

import (
	"os"
	"path/filepath"
	"strconv"
)

// Lua is the [lua] table: settings shared by every certificate's Lua
// scripts (see README.md, "Lua scripts").
type Lua struct {
	// LibDir is a directory of the scripts' own Lua modules:
	// require("site.paths") loads LibDir/site/paths.lua. Empty means only
	// require("acmehook") resolves.
	LibDir string `toml:"lib_dir"`
	// Vars reach every script, read-only, as acmehook.vars: the nginx
	// binary, a webhook URL and the like. Values are strings, numbers or
	// booleans (scripts see them as strings), or secret tables
	// ({ secret_env = "NAME" } ...) as in a plugin's config.
	Vars map[string]any `toml:"vars"`
}

// RevealedVars returns Vars as strings, secrets revealed, for the script
// host. Never log it.
func (l Lua) RevealedVars() map[string]string {
	out := make(map[string]string, len(l.Vars))
	for k, v := range l.Vars {
		switch v := v.(type) {
		case string:
			out[k] = v
		case Secret:
			out[k] = v.Reveal()
		case int64:
			out[k] = strconv.FormatInt(v, 10)
		case float64:
			out[k] = strconv.FormatFloat(v, 'g', -1, 64)
		case bool:
			out[k] = strconv.FormatBool(v)
		}
	}
	return out
}

// completeLua resolves lib_dir against the configuration's directory and
// the secret tables in vars.
func (c *Config) completeLua(base string) []error {
	if c.Lua.LibDir != "" && !filepath.IsAbs(c.Lua.LibDir) {
		c.Lua.LibDir = filepath.Join(base, c.Lua.LibDir)
	}
	return c.resolveMap(c.Lua.Vars, "lua.vars")
}

// validateLua checks that every var is a value a script can read as a
// string.
func (c *Config) validateLua() []error {
	var errs []error
	for _, k := range sortedKeys(c.Lua.Vars) {
		switch c.Lua.Vars[k].(type) {
		case string, Secret, int64, float64, bool:
		default:
			errs = append(errs, c.errorf("lua.vars."+quoteSeg(k), "must be a string, number, boolean or secret table"))
		}
	}
	return errs
}

// checkLuaFiles checks that lib_dir, if set, is a directory.
func (c *Config) checkLuaFiles() error {
	if c.Lua.LibDir == "" {
		return nil
	}
	fi, err := os.Stat(c.Lua.LibDir)
	switch {
	case err != nil:
		return c.errorf("lua.lib_dir", "%v", unwrapPath(err, c.shown(c.Lua.LibDir)))
	case !fi.IsDir():
		return c.errorf("lua.lib_dir", "%s is not a directory", c.shown(c.Lua.LibDir))
	}
	return nil
}
