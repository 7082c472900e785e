package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Workdir is one test's configuration directory: events.lua, the
// directory that script records events into, and a webroot nobody serves.
type Workdir struct {
	// Dir holds events.lua; configurations written here name it as
	// scripts = ["events.lua"].
	Dir string
	// Events is where events.lua records every event it receives as JSON,
	// one file per event: "CERT.EVENT.json", and for challenge events
	// "CERT.EVENT.IDENTIFIER.json", and for the run-level events (which
	// have no certificate) "run.EVENT.json", the last run's. The recorded
	// table also carries var_marker, the script's acmehook.vars.marker.
	Events string
	// Gate: issued and renew of certificates named "gated-*" fail in
	// events.lua ("deploy target not ready") while this file is missing.
	Gate string
	// Unserved is a webroot that no web server serves.
	Unserved string
}

// eventsScript is events.lua; its two parameters are Events and Gate.
const eventsScript = `
local acmehook = require("acmehook")
local out, gate = %q, %q
local function record(ev)
  ev.var_marker = acmehook.vars.marker -- [lua.vars] from acmehook.toml
  local name = (ev.cert_name or "run") .. "." .. ev.name
  if ev.challenge then name = name .. "." .. ev.challenge.identifier end
  assert(acmehook.files.write(out .. "/" .. name .. ".json", acmehook.json.encode(ev)))
end
for _, n in ipairs(acmehook.events) do acmehook.on(n, record) end
local function gated(ev)
  if string.sub(ev.cert_name, 1, 6) == "gated-" and not acmehook.files.exists(gate) then
    error("deploy target not ready")
  end
end
acmehook.on("issued", gated)
acmehook.on("renew", gated)
`

// NewWorkdir makes a Workdir in a temporary directory of t.
func NewWorkdir(t testing.TB) Workdir {
	t.Helper()
	dir := t.TempDir()
	w := Workdir{Dir: dir, Events: filepath.Join(dir, "events"), Gate: filepath.Join(dir, "deploy-ok"), Unserved: filepath.Join(dir, "unserved")}
	for _, d := range []string{w.Events, w.Unserved} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "events.lua"), []byte(fmt.Sprintf(eventsScript, w.Events, w.Gate)), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// Event returns what events.lua recorded under name ("CERT.EVENT" or
// "CERT.EVENT.IDENTIFIER") and fails the test when the event never reached
// the script.
func (w Workdir) Event(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(w.Events, name+".json"))
	if err != nil {
		t.Fatalf("event %s did not reach the script: %v", name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("event %s: %v", name, err)
	}
	return m
}
