package engine

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRenewBeforeFromConfig: renew_before in acmehook.toml, as a duration
// or as a lifetime fraction, sets the renewal time (to the minute) of a
// certificate from a CA without ARI.
func TestRenewBeforeFromConfig(t *testing.T) {
	tests := []struct {
		name, value string
		at          func(nb, na time.Time) time.Time
	}{
		{"rb-duration", "720h", func(_, na time.Time) time.Time { return na.Add(-720 * time.Hour) }},
		{"rb-fraction", "25%", func(nb, na time.Time) time.Time { return nb.Add((na.Sub(nb) + time.Second) / 4 * 3) }},
	}
	e := newEnv(t)
	o := Options{HTTPClient: &http.Client{Transport: noARI{pebble.HTTPClient().Transport}}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.write(fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [\"%s.example.com\"]\nsolver = \"webroot\"\nprofile = \"default\"\nrenew_before = %q\n", tt.name, tt.name, tt.value))
			e.now = nil
			if r := e.runWith(cfg, o, RunOptions{})[tt.name]; r.Action != ActionIssued || r.Err != nil {
				t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
			}
			v := e.current(cfg, tt.name)
			due := tt.at(v.Info.NotBefore, v.Info.NotAfter)
			if !due.After(v.Info.NotBefore.Add(24 * time.Hour)) {
				t.Fatalf("renewal time %s too close to issuance for a %s certificate", due, v.Info.NotAfter.Sub(v.Info.NotBefore))
			}
			for _, s := range []struct {
				at   time.Time
				want Action
			}{
				{due.Add(-time.Minute), ActionNone},
				{due.Add(time.Minute), ActionRenewed},
			} {
				e.now = func() time.Time { return s.at }
				r := e.runWith(cfg, o, RunOptions{})[tt.name]
				if r.Action != s.want || r.Err != nil || !strings.Contains(r.Reason, "renew_before "+tt.value) {
					t.Errorf("run at %s = %s %q %v, want %s by renew_before %s", s.at, r.Action, r.Reason, r.Err, s.want, tt.value)
				}
			}
		})
	}
}
