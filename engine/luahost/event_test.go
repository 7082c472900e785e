package luahost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// TestHandle runs a Host as the engine does, through event.Hook: every
// script of Options.Scripts for a post-event, up to the first failure (the
// veto) for a pre-event.
func TestHandle(t *testing.T) {
	dir := t.TempDir()
	marks := filepath.Join(dir, "marks")
	if err := os.Mkdir(marks, 0o700); err != nil {
		t.Fatal(err)
	}
	script := func(name string, fail bool) string {
		body := "acmehook.files.write('" + filepath.Join(marks, name) + "', ev.name)"
		if fail {
			body += "\n  error('" + name + " refuses')"
		}
		return writeScript(t, name+".lua", "local acmehook = require('acmehook')\nfor _, e in ipairs(acmehook.events) do acmehook.on(e, function(ev)\n  "+body+"\nend) end\n")
	}
	scripts := []string{script("a", true), script("b", true), script("c", false)}
	var h event.Hook = New(Options{Scripts: scripts, Timeout: 10 * time.Second})
	tests := []struct {
		ev        event.Type
		wantRan   []string
		wantInErr []string
	}{
		{event.ChallengeProvision, []string{"a"}, []string{"running challenge-provision script " + scripts[0] + ":4: a refuses"}},
		{event.Issued, []string{"a", "b", "c"}, []string{"running issued script " + scripts[0] + ":4: a refuses", "running issued script " + scripts[1] + ":4: b refuses"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.ev), func(t *testing.T) {
			for _, n := range []string{"a", "b", "c"} {
				os.Remove(filepath.Join(marks, n))
			}
			err := h.Handle(context.Background(), event.Event{Type: tt.ev, Challenge: &event.Challenge{}})
			var se *ScriptError
			if !errors.As(err, &se) {
				t.Fatalf("Handle(%s) = %v, want a *ScriptError", tt.ev, err)
			}
			for _, want := range tt.wantInErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Handle(%s) = %q, want it to contain %q", tt.ev, err, want)
				}
			}
			var ran []string
			for _, n := range []string{"a", "b", "c"} {
				if _, err := os.Stat(filepath.Join(marks, n)); err == nil {
					ran = append(ran, n)
				}
			}
			if strings.Join(ran, ",") != strings.Join(tt.wantRan, ",") {
				t.Errorf("Handle(%s) ran %v, want %v", tt.ev, ran, tt.wantRan)
			}
		})
	}
	if err := New(Options{}).Handle(context.Background(), event.Event{Type: event.Issued}); err != nil {
		t.Errorf("Handle with no scripts = %v, want nil", err)
	}
}

// TestEventTableFields checks the keys the table conversion adds beyond
// what a synthetic event carries: the problem's instance, dry_run, and a
// revocation reason of 0 (unspecified) on revoke.
func TestEventTableFields(t *testing.T) {
	tests := []struct {
		name  string
		ev    event.Event
		check string
	}{
		{"problem instance", event.Event{Type: event.Failed, Error: &event.Error{Message: "m", ProblemType: "t", ProblemDetail: "d", ProblemInstance: "https://ca.example/i/1"}},
			`ev.error.message == "m" and ev.error.problem_type == "t" and ev.error.problem_detail == "d" and ev.error.problem_instance == "https://ca.example/i/1"`},
		{"dry run", event.Event{Type: event.Issued, DryRun: true}, `ev.dry_run == true and ev.test == nil`},
		{"not dry run", event.Event{Type: event.Issued}, `ev.dry_run == nil and ev.revocation_reason == nil and #ev.domains == 0`},
		{"unspecified revocation", event.Event{Type: event.Revoke}, `ev.revocation_reason == 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "local acmehook = require('acmehook')\nacmehook.on('" + string(tt.ev.Type) + "', function(ev) assert(" + tt.check + ") end)\n"
			if err := run(t, New(Options{}), src, tt.ev); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCleanupScriptsAtOnce: challenge-cleanup reaches every script at
// once under the caller's one deadline, so N scripts that each take most
// of it all finish (a run in turn would cut off all but the first), in
// well under two deadlines; another post-event still runs them in order.
func TestCleanupScriptsAtOnce(t *testing.T) {
	// Each script marks that it started, then waits until all four have:
	// that ends only if the four run at the same time. One after another,
	// the first would wait for the others until the shared deadline ends it.
	// The deadline is only a bound for the failing case, not a timing to meet.
	const deadline = 20 * time.Second
	names := []string{"a", "b", "c", "d"}
	marks := t.TempDir()
	var waitAll string
	for _, n := range names {
		waitAll += fmt.Sprintf(" and acmehook.files.exists(%q)", filepath.Join(marks, n+".started"))
	}
	var scripts []string
	for _, n := range names {
		scripts = append(scripts, writeScript(t, n+".lua", `local acmehook = require('acmehook')
acmehook.on('challenge-cleanup', function(ev)
  acmehook.files.write('`+filepath.Join(marks, n+".started")+`', 'started')
  while not (true`+waitAll+`) do
    local ok, err = acmehook.sleep(0.02)
    if not ok then error(err) end
  end
  acmehook.files.write('`+filepath.Join(marks, n)+`', 'cleaned')
end)
`))
	}
	h := New(Options{Scripts: scripts, Timeout: 2 * deadline})
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := h.Handle(ctx, event.Event{Type: event.ChallengeCleanup, Challenge: &event.Challenge{}}); err != nil {
		t.Errorf("Handle(challenge-cleanup) = %v, want the four scripts run at once, each done within the shared deadline", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(marks, n)); err != nil {
			t.Errorf("script %s did not clean up: %v", n, err)
		}
	}
}
