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
	"github.com/acmehook/acmehook/engine/fleet"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
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

// TestE2EFleetAccountRollover: two daemons on etcd have issued a
// certificate that is due again 2 s after it was issued (renew_before;
// the daemon looks again a minute later at the soonest).
// `acmehook account rollover`, run with node a's configuration beside
// them, waits for the account's lock that another process holds for a
// second, then changes the fleet's account key at the CA, which refuses
// the old key from then on. Then the other node stops: its owner looks at every
// certificate again at once (membership changed) and renews it: its first
// request, signed with the key the daemon had cached, is refused; the
// daemon reads the stored account again and orders with the new key. No
// account is registered anew and the account URL stays.
func TestE2EFleetAccountRollover(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	// The default profile is 90 days: due 2 s after notBefore.
	const cert = "[[certificate]]\nname = \"roll\"\ndomains = [\"roll.fleet.example.com\"]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\"]\nprofile = \"default\"\nrenew_before = \"2159h59m57s\"\n"
	nodes := newFleet(t, c, 2, func(string) string { return cert })
	for _, n := range nodes {
		n.start(t)
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to deploy the first version", func() bool { v, _ := n.deployed(t); return v >= 1 }, n.out)
	}
	issued := time.Now()
	owner, other := nodes[0], nodes[1]
	if !owner.ordering("roll") {
		owner, other = other, owner
	}
	keyOf := func() string {
		resp, err := c.Client(t).Get(t.Context(), accountKey(pebble.DirectoryURL, "key.pem"))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reading the account key from etcd: %v %v", resp, err)
		}
		return string(resp.Kvs[0].Value)
	}
	before, _ := fleetAccount(t, c, pebble.DirectoryURL)
	sealedKey := keyOf()
	counts, _ := pebble.Counter().Snapshot()
	registered, finalizedBefore := counts["POST /sign-me-up"], finalized()

	// Another process holds the account's lock for a second (as a node
	// looking at the CA's terms does): the rollover waits for it.
	holder, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints, Node: "holder", LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	l, err := holder.Lock(t.Context(), engine.AccountLock(pebble.DirectoryURL))
	if err != nil {
		t.Fatal(err)
	}
	const held = time.Second
	locked := time.Now()
	go func() { time.Sleep(held); l.Unlock(t.Context()) }()
	o := nodes[0].site.acmehook("account", "rollover")
	if o.code != 0 || !strings.Contains(o.stdout, "new key in place") {
		t.Fatalf("account rollover beside the daemons: %s", o)
	}
	if waited := time.Since(locked); waited < held || !strings.Contains(o.stderr, `msg="waiting for the account's lock"`) {
		t.Errorf("account rollover returned %s after another process took the account's lock for %s; want it to wait, saying so:\n%s", waited.Round(time.Millisecond), held, o.stderr)
	}
	if keyOf() == sealedKey {
		t.Fatal("the account key in etcd did not change")
	}
	time.Sleep(time.Until(issued.Add(3 * time.Second)))
	other.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "node "+owner.name+" to deploy the version renewed after the rollover", func() bool { v, _ := owner.deployed(t); return v >= 2 }, owner.out)
	log := owner.out.String()
	if !strings.Contains(log, `msg="the stored account changed`) {
		t.Errorf("node %s did not log that it took up the stored account's new key:\n%s", owner.name, log)
	}
	if strings.Contains(log, "level=ERROR") || strings.Contains(log, "refused the replaces field") {
		t.Errorf("node %s logged an error, or took the refusal for one of replaces:\n%s", owner.name, log)
	}
	if got := finalized() - finalizedBefore; got != 1 {
		t.Errorf("Pebble finalized %d orders after the rollover, want 1", got)
	}
	after, _ := fleetAccount(t, c, pebble.DirectoryURL)
	if after["url"] != before["url"] {
		t.Errorf("account URL %v after the rollover, want %v", after["url"], before["url"])
	}
	counts, _ = pebble.Counter().Snapshot()
	if got := counts["POST /sign-me-up"] - registered; got != 0 {
		t.Errorf("%d newAccount requests after the rollover, want none", got)
	}
}

// TestE2EDaemonStopsWithoutEtcd: a daemon on etcd whose cluster is gone
// stops within daemonStopBound of SIGTERM, idle or in the middle of an
// order (its validation held): nothing it does on the way out (releasing
// the certificate's lock, revoking its leases, the relay, the
// coordinator) waits for etcd longer than the documented bound.
func TestE2EDaemonStopsWithoutEtcd(t *testing.T) {
	for _, tt := range []struct {
		name   string
		midRun bool
	}{
		{"idle", false},
		{"mid-order", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := testetcd.Start(t, testetcd.Options{})
			host := "stop-" + tt.name + ".fleet.example.com"
			certs := "[[certificate]]\nname = \"first\"\ndomains = [\"first-" + tt.name + ".fleet.example.com\"]\nsolver = \"webroot\"\n"
			nodes := newFleet(t, c, 1, func(string) string { return certs })
			n := nodes[0]
			// The default lease TTL: a lease that is not revoked outlives
			// the stop by 15 s.
			n.site.text = strings.Replace(n.site.text, `lease_ttl = "2s"`, `lease_ttl = "15s"`, 1)
			if err := os.WriteFile(n.conf, []byte(n.site.text), 0o644); err != nil {
				t.Fatal(err)
			}
			n.start(t)
			exited := make(chan error, 1)
			go func() { exited <- n.cmd.Wait() }()
			waitFor(t, "the first certificate", func() bool { return strings.Contains(n.out.String(), `msg="next check"`) }, n.out)
			if tt.midRun {
				hd := holds.hold(t, host)
				n.site.text += "[[certificate]]\nname = \"held\"\ndomains = [\"" + host + "\"]\nsolver = \"webroot\"\nself_check = false\n"
				if err := os.WriteFile(n.conf, []byte(n.site.text), 0o644); err != nil {
					t.Fatal(err)
				}
				n.cmd.Process.Signal(syscall.SIGHUP)
				if !hd.Arrived() {
					t.Fatalf("the held validation never arrived; log:\n%s", n.out)
				}
			}
			c.Close()
			time.Sleep(500 * time.Millisecond)
			mark := len(n.out.String())
			start := time.Now()
			n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("the daemon did not stop within 60 s of SIGTERM without etcd; log:\n%s", n.out.String()[mark:])
			}
			took := time.Since(start)
			t.Logf("stopped %s after SIGTERM without etcd (%s)", took.Round(10*time.Millisecond), tt.name)
			if took > daemonStopBound {
				t.Errorf("the daemon took %s to stop on SIGTERM without etcd, want at most %s; log after SIGTERM:\n%s", took.Round(10*time.Millisecond), daemonStopBound, n.out.String()[mark:])
			}
		})
	}
}

// daemonStopBound is how long a daemon whose etcd is unreachable takes at
// most to stop on SIGTERM: fleet.StopTimeout (docs/fleet.md, "Running a
// fleet"), and the rest of the way out (its plugin, the process exit)
// within 2 s more.
const daemonStopBound = fleet.StopTimeout + 2*time.Second
