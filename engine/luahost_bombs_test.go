package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/luahost"
)

// TestScriptBombsInARun: a challenge-provision script that would once have
// ended acmehook (out of memory in one builtin, a pattern backtracking for
// hours) fails only itself, within its script_timeout and the host's grace:
// the run goes on, the challenge is not answered, the webroot plugin cleans
// up its file and challenge-cleanup still reaches the scripts. The bombs of
// each builtin are in engine/luahost's TestBombs; here they run inside a
// real engine run against Pebble.
func TestScriptBombsInARun(t *testing.T) {
	tests := []struct {
		name, code string
		line       int
		causes     []error
	}{
		{"gsub", "local s = ('x'):rep(1000)\n  s:gsub('x', ('y'):rep(16 * 1024 * 1024))", 4, []error{luahost.ErrMemoryLimit, context.DeadlineExceeded}},
		{"pattern", "\n  string.find(('a'):rep(80), ('a-'):rep(40) .. 'b')", 4, []error{context.DeadlineExceeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			bomb := filepath.Join(e.work.Dir, "bomb.lua")
			src := "local acmehook = require('acmehook')\nacmehook.on('challenge-provision', function(ev)\n  " + tt.code + "\nend)\n"
			if err := os.WriteFile(bomb, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			name := "bomb-" + tt.name
			domain := tt.name + ".bomb.example.com"
			cfg := e.write(`
[[certificate]]
name = "` + name + `"
domains = ["` + domain + `"]
solver = "webroot"
scripts = ["events.lua", "bomb.lua"]
script_timeout = "2s"
`)
			start := time.Now()
			r := e.run(cfg, RunOptions{})[name]
			elapsed := time.Since(start)
			t.Logf("after %v: %v", elapsed.Round(time.Millisecond), r.Err)
			var se *luahost.ScriptError
			if r.Action != ActionFailed || !errors.Is(r.Err, ErrVetoed) || !errors.As(r.Err, &se) {
				t.Fatalf("run = %s %v, want failed, vetoed by a script error", r.Action, r.Err)
			}
			if se.Script != "bomb.lua" && !strings.HasSuffix(se.Script, string(filepath.Separator)+"bomb.lua") || se.Line != tt.line {
				t.Errorf("script error at %s:%d, want bomb.lua:%d", se.Script, se.Line, tt.line)
			}
			found := false
			for _, c := range tt.causes {
				found = found || errors.Is(r.Err, c)
			}
			if !found {
				t.Errorf("error unwraps to none of %v", tt.causes)
			}
			e.event(name + ".challenge-cleanup." + domain)
			entries, _ := os.ReadDir(filepath.Join(webRoot, ".well-known", "acme-challenge"))
			for _, en := range entries {
				t.Errorf("challenge file %s left after cleanup", en.Name())
			}
			// Well below the minute a stuck script would once have held
			// the run (or the process's death).
			if elapsed > 20*time.Second {
				t.Errorf("run took %v", elapsed)
			}
		})
	}
}
