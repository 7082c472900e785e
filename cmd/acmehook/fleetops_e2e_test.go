package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/testetcd"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// tosScript records each tos-changed event of a node as a file
// terms-changed.N in the directory out.
const tosScript = `
local acmehook = require("acmehook")
local out = %q
acmehook.on("tos-changed", function(ev)
  local i = 1
  while acmehook.files.exists(out .. "/terms-changed." .. i) do i = i + 1 end
  assert(acmehook.files.write(out .. "/terms-changed." .. i, ev.terms_of_service))
end)
`

// accountKey is the etcd key of the fleet's account file (name:
// account.json, key.pem) for the CA directory.
func accountKey(directory, name string) string {
	return "/acmehook/accounts/" + store.AccountDirName(directory) + "/" + name
}

// fleetAccount returns the fleet's account info for directory, as etcd
// holds it, and how many times it was written (the key's version).
func fleetAccount(t *testing.T, c *testetcd.Cluster, directory string) (map[string]any, int64) {
	t.Helper()
	resp, err := c.Client(t).Get(t.Context(), accountKey(directory, "account.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		t.Fatalf("no account info in etcd for %s", directory)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		t.Fatal(err)
	}
	return m, resp.Kvs[0].Version
}

// reloadsDone reports whether the node's log shows a check scheduled after
// its n-th configuration reload: the run that followed it ended.
func (n *fleetNode) reloadsDone(count int) bool {
	log := n.out.String()
	for range count {
		i := strings.Index(log, `msg="configuration reloaded"`)
		if i < 0 {
			return false
		}
		log = log[i+1:]
	}
	return strings.Contains(log, `msg="next check"`)
}

// TestE2EFleetTOSChangedOnce: three daemons share one account. The CA's
// directory (rewritten by a fault proxy) names new terms, and the fleet's
// last look at them is more than a day old; all three daemons reload at
// the same moment, so each run ends with a look at the terms, and the
// directory's answer is held back half a second so the looks overlap.
// Exactly one node raises tos-changed, and the account info is written
// once (one look under the account's lock; the others find it held, or
// find the look just made).
func TestE2EFleetTOSChangedOnce(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	p := pebbletest.NewFaultProxy(t, pebble)
	certs := "[[certificate]]\nname = \"tos\"\ndomains = [\"tos.fleet.example.com\"]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\", \"tos.lua\"]\n"
	nodes := newFleet(t, c, 3, func(string) string { return certs })
	for _, n := range nodes {
		if err := os.WriteFile(filepath.Join(n.site.work.Dir, "tos.lua"), []byte(fmt.Sprintf(tosScript, n.deploys)), 0o644); err != nil {
			t.Fatal(err)
		}
		text := strings.Replace(n.site.text, `directory = "`+pebble.DirectoryURL+`"`, `directory = "`+p.DirectoryURL+`"`, 1)
		text = strings.Replace(text, `ca_bundle = "`+pebble.CAFile+`"`, `ca_bundle = "`+p.CAFile+`"`, 1)
		if err := os.WriteFile(n.conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		n.start(t)
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to deploy the certificate", func() bool { v, _ := n.deployed(t); return v >= 1 }, n.out)
	}
	info, _ := fleetAccount(t, c, p.DirectoryURL)
	agreed, _ := info["terms_of_service"].(string)
	if agreed == "" {
		t.Fatalf("account info %v records no terms agreed to", info)
	}
	// The last look a day and an hour ago.
	info["terms_checked_at"] = time.Now().Add(-engine.TermsCheckInterval - time.Hour).UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(info)
	if _, err := c.Client(t).Put(t.Context(), accountKey(p.DirectoryURL, "account.json"), string(b)); err != nil {
		t.Fatal(err)
	}
	_, written := fleetAccount(t, c, p.DirectoryURL)
	const newTerms = "https://ca.example/terms/fleet-2027.pdf"
	p.Add(pebbletest.Fault{Kind: "GET /dir", Rewrite: func(h http.Header, body []byte) []byte {
		time.Sleep(500 * time.Millisecond)
		return pebbletest.EditJSON(func(m map[string]any) { m["meta"].(map[string]any)["termsOfService"] = newTerms })(h, body)
	}})
	dirs := p.Count("GET /dir")
	for _, n := range nodes {
		n.cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.name+"'s run after the reload", func() bool { return n.reloadsDone(1) }, n.out)
	}
	var raised []string
	for _, n := range nodes {
		files, _ := filepath.Glob(filepath.Join(n.deploys, "terms-changed.*"))
		for _, f := range files {
			got, _ := os.ReadFile(f)
			if string(got) != newTerms {
				t.Errorf("node %s: tos-changed carried terms %q, want %q", n.name, got, newTerms)
			}
			raised = append(raised, n.name)
		}
	}
	if len(raised) != 1 {
		t.Errorf("tos-changed raised %d times across the fleet (by %v), want once", len(raised), raised)
	}
	after, version := fleetAccount(t, c, p.DirectoryURL)
	if version != written+1 {
		t.Errorf("account info written %d times by the fleet's looks, want once", version-written)
	}
	if after["terms_announced"] != newTerms || after["terms_of_service"] != agreed {
		t.Errorf("account info after the look = %v, want %s announced and %s still agreed", after, newTerms, agreed)
	}
	if got := p.Count("GET /dir") - dirs; got != 1 {
		t.Errorf("the fleet fetched the directory %d times, want once (one look)", got)
	}
}
