package luahost

import (
	"context"
	"path/filepath"
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
