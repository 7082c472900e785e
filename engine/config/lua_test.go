package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLua(t *testing.T) {
	t.Setenv("ACMEHOOK_TEST_HOOK_TOKEN", "s3cret")
	p := writeConfig(t, minimal+`
[lua]
lib_dir = "lua-lib"
[lua.vars]
nginx = "/usr/local/sbin/nginx"
probe_tries = 3
probe_wait = 0.5
verbose = true
webhook_token = { secret_env = "ACMEHOOK_TEST_HOOK_TOKEN" }
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if got, want := cfg.Lua.LibDir, filepath.Join(dir, "lua-lib"); got != want {
		t.Errorf("Lua.LibDir = %q, want %q", got, want)
	}
	want := map[string]string{"nginx": "/usr/local/sbin/nginx", "probe_tries": "3", "probe_wait": "0.5", "verbose": "true", "webhook_token": "s3cret"}
	if diff := cmp.Diff(want, cfg.Lua.RevealedVars()); diff != "" {
		t.Errorf("RevealedVars (-want +got):\n%s", diff)
	}
	if s, ok := cfg.Lua.Vars["webhook_token"].(Secret); !ok || strings.Contains(s.String(), "s3cret") {
		t.Errorf("Vars[webhook_token] = %#v, want a redacted Secret", cfg.Lua.Vars["webhook_token"])
	}

	if err := cfg.CheckFiles(); err == nil || !strings.Contains(err.Error(), "lua.lib_dir: lua-lib: no such file or directory") {
		t.Errorf("CheckFiles without the library directory = %v, want lua.lib_dir reported", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "lua-lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckFiles(); err != nil && strings.Contains(err.Error(), "lua.lib_dir") {
		t.Errorf("CheckFiles with the library directory = %v", err)
	}

	t.Run("none", func(t *testing.T) {
		cfg, err := Load(writeConfig(t, minimal))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Lua.LibDir != "" || len(cfg.Lua.RevealedVars()) != 0 {
			t.Errorf("Lua = %+v, want empty", cfg.Lua)
		}
	})
	t.Run("bad values", func(t *testing.T) {
		_, err := Load(writeConfig(t, minimal+`
[lua.vars]
list = ["a", "b"]
nested = { a = "b" }
missing = { secret_env = "ACMEHOOK_TEST_UNSET_VARIABLE" }
`))
		if err == nil {
			t.Fatal("Load accepted a list, a table and a missing secret in [lua.vars]")
		}
		for _, want := range []string{
			":13: lua.vars.list: must be a string, number, boolean or secret table",
			":14: lua.vars.nested: must be a string",
			":15: lua.vars.missing:",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load error does not contain %q:\n%v", want, err)
			}
		}
	})
}
