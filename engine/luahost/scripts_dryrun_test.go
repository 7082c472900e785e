package luahost

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/engine/event"
)

// TestNotifyScriptsDryRun: on a dry run (ev.dry_run) webhook.lua and
// failed_alert.lua send nothing, for every event, and do not fail; the
// same events without dry_run do reach the endpoint (so the test can
// fail).
func TestNotifyScriptsDryRun(t *testing.T) {
	for _, sc := range []struct {
		script, urlVar string
		sends          []event.Type
	}{
		{"webhook.lua", "webhook_url", []event.Type{event.Issued, event.Renew, event.Revoke}},
		{"failed_alert.lua", "alert_url", []event.Type{event.Failed}},
	} {
		t.Run(sc.script, func(t *testing.T) {
			for _, dry := range []bool{true, false} {
				rec := &recorder{}
				h := New(Options{Vars: map[string]string{sc.urlVar: rec.start(t)}})
				for _, name := range sc.sends {
					ev := synthetic(t, name)
					ev.DryRun = dry
					if err := h.Dispatch(context.Background(), filepath.Join(scriptsDir, sc.script), ev); err != nil {
						t.Fatalf("%s (dry run %v): %v", name, dry, err)
					}
				}
				want := 0
				if !dry {
					want = len(sc.sends)
				}
				if len(rec.bodies) != want {
					t.Errorf("dry run %v: %d requests sent for %v, want %d", dry, len(rec.bodies), sc.sends, want)
				}
			}
		})
	}
}

// TestShippedScriptsCheckDryRun: every shipped script tests ev.dry_run,
// and each one's dry-run behaviour is covered by a test here
// (TestNginxScript and TestHAProxyScript "dry run", TestNotifyScriptsDryRun):
// a new script fails this until it is.
func TestShippedScriptsCheckDryRun(t *testing.T) {
	covered := map[string]bool{"nginx.lua": true, "haproxy.lua": true, "webhook.lua": true, "failed_alert.lua": true}
	paths, err := filepath.Glob(filepath.Join(scriptsDir, "*.lua"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no shipped scripts in %s (%v)", scriptsDir, err)
	}
	for _, p := range paths {
		name := filepath.Base(p)
		if !covered[name] {
			t.Errorf("%s: no test covers what it does on a dry run", name)
		}
		if src := readFile(t, p); !strings.Contains(src, "ev.dry_run") {
			t.Errorf("%s does not test ev.dry_run: a dry run would deploy or notify", name)
		}
	}
}
