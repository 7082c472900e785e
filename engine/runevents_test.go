package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// runEventsScript is a script recording every run-begin and run-end it gets as
// one JSON line in a file of its own; run-end fails while the file
// "reload-broken" exists and something was deployed, as a reload that
// fails. At run-end it also records whether each deployed certificate's
// issued or renew event had already reached events.lua.
const runEventsScript = `
local acmehook = require("acmehook")
local files, json = acmehook.files, acmehook.json
local log, events, broken = %q, %q, %q
-- Lists are recorded comma-joined (an empty table has no JSON array form),
-- nil as "nil".
local function list(l)
  return l and table.concat(l, ",") or "nil"
end
local function record(ev)
  local entry = {name = ev.name, certificates = ev.certificates, issued = list(ev.issued), renewed = list(ev.renewed),
    deployed = list(ev.deployed), failed = list(ev.failed), held = list(ev.held), cert_name = ev.cert_name, started_at = ev.started_at}
  local seen = {}
  for _, n in ipairs(ev.deployed or {}) do
    local ok = files.exists(events .. "/" .. n .. ".issued.json") or files.exists(events .. "/" .. n .. ".renew.json")
    seen[#seen + 1] = ok and "y" or "n"
  end
  entry.seen = table.concat(seen)
  local old = files.read(log) or ""
  assert(files.write(log, old .. assert(json.encode(entry)) .. "\n"))
  if ev.name == "run-end" and #ev.deployed > 0 and files.exists(broken) then
    error("reload failed")
  end
end
acmehook.on("run-begin", record)
acmehook.on("run-end", record)
`

// runRecord is one line of runEventsScript's log.
type runRecord struct {
	Name         string `json:"name"`
	Certificates []struct {
		Cert     string `json:"cert_name"`
		Action   string `json:"action"`
		Serial   string `json:"serial"`
		Deployed bool   `json:"deployed"`
		Error    string `json:"error"`
	} `json:"certificates"`
	Issued    string  `json:"issued"`
	Renewed   string  `json:"renewed"`
	Deployed  string  `json:"deployed"`
	Failed    string  `json:"failed"`
	Held      string  `json:"held"`
	CertName  *string `json:"cert_name"`
	StartedAt int64   `json:"started_at"`
	Seen      string  `json:"seen"`
}

// readRuns returns the records in path and empties it.
func readRuns(t *testing.T, path string) []runRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	os.Remove(path)
	var out []runRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var r runRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("run record %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// TestRunEvents: a script attached to three certificates gets one
// run-begin and one run-end per run, listing those three (and not a
// fourth certificate that does not use it), after their deploys; a run
// with nothing to do still frames itself; a failing run-end marks the
// deploys it was told about pending, and the next run deploys them again
// without an order.
func TestRunEvents(t *testing.T) {
	e := newEnv(t)
	log := filepath.Join(e.work.Dir, "runs.jsonl")
	broken := filepath.Join(e.work.Dir, "reload-broken")
	script := fmt.Sprintf(runEventsScript, log, e.work.Events, broken)
	if err := os.WriteFile(filepath.Join(e.work.Dir, "reload.lua"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	var certs string
	for _, n := range []string{"one", "two", "three"} {
		certs += fmt.Sprintf("\n[[certificate]]\nname = %q\ndomains = [\"%s.run.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\", \"reload.lua\"]\n", n, n)
	}
	certs += "\n[[certificate]]\nname = \"other\"\ndomains = [\"other.run.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n"
	cfg := e.write(certs)
	three := []string{"one", "two", "three"}

	res := e.run(cfg, RunOptions{})
	runs := readRuns(t, log)
	if len(runs) != 2 || runs[0].Name != "run-begin" || runs[1].Name != "run-end" {
		t.Fatalf("first run: script got %d run events %v, want run-begin then run-end", len(runs), runs)
	}
	begin, end := runs[0], runs[1]
	for i, c := range begin.Certificates {
		if c.Cert != three[i] || c.Action != "issue" {
			t.Errorf("run-begin certificate %d = %s %s, want %s issue", i, c.Cert, c.Action, three[i])
		}
	}
	if len(begin.Certificates) != 3 || begin.CertName != nil || begin.StartedAt == 0 || begin.StartedAt != end.StartedAt || begin.Deployed != "nil" {
		t.Errorf("run-begin = %+v, want the 3 certificates, no cert_name, the run's started_at", begin)
	}
	want := runRecord{Name: "run-end", Issued: "one,two,three", Deployed: "one,two,three", StartedAt: begin.StartedAt, Seen: "yyy"}
	got := end
	got.Certificates = nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("run-end (-want +got):\n%s", diff)
	}
	for i, c := range end.Certificates {
		if c.Cert != three[i] || c.Action != "issued" || !c.Deployed || c.Serial != res[three[i]].Serial || c.Serial == "" {
			t.Errorf("run-end certificate %d = %+v, want %s issued, deployed, serial %s", i, c, three[i], res[three[i]].Serial)
		}
	}
	// events.lua, used by all four, got one of each too.
	if ev := e.event("run.run-end"); len(ev["issued"].([]any)) != 4 {
		t.Errorf("events.lua's run-end issued = %v, want the four certificates", ev["issued"])
	}

	t.Run("nothing to do", func(t *testing.T) {
		e.run(cfg, RunOptions{})
		runs := readRuns(t, log)
		if len(runs) != 2 || runs[1].Name != "run-end" || runs[1].Deployed != "" || len(runs[1].Certificates) != 3 || runs[1].Certificates[0].Action != "none" {
			t.Errorf("second run: %+v, want run-begin and a run-end with the 3 certificates, none deployed", runs)
		}
	})

	t.Run("run-end fails", func(t *testing.T) {
		if err := os.WriteFile(broken, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.run(cfg, RunOptions{Names: []string{"two"}, Force: true})["two"]
		if r.Action != ActionRenewed || !errors.Is(r.Err, ErrDeploy) || !strings.Contains(r.Err.Error(), "reload failed") {
			t.Fatalf("forced renewal = %s %v, want renewed with the run-end script's error as a deploy error", r.Action, r.Err)
		}
		if runs := readRuns(t, log); len(runs) != 2 || runs[1].Renewed != "two" || len(runs[1].Certificates) != 1 {
			t.Errorf("runs = %+v, want a run-end for two alone, renewed", runs)
		}
		if m := e.meta(cfg, "two"); !m.PendingDeploy || m.Events[len(m.Events)-1].Name != "run-end" {
			t.Fatalf("metadata = %+v, want the deploy pending after a failed run-end", m)
		}
		os.Remove(broken)
		pebble.Counter().Reset()
		res := e.run(cfg, RunOptions{})
		if r := res["two"]; r.Action != ActionDeployed || r.Err != nil || newOrders() != 0 {
			t.Errorf("next run: two = %s %v with %d orders, want deployed again without an order", r.Action, r.Err, newOrders())
		}
		runs := readRuns(t, log)
		if len(runs) != 2 || runs[1].Deployed != "two" {
			t.Errorf("next run's run events = %+v, want run-end with two deployed", runs)
		}
		if m := e.meta(cfg, "two"); m.PendingDeploy {
			t.Error("deploy still pending after the run-end succeeded")
		}
	})
}
