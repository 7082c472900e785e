package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/fleet"
	"github.com/acmehook/acmehook/internal/testetcd"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
)

// TestE2EMigrateToEtcd: a certificate issued on the file storage is copied
// into etcd with `storage migrate --to etcd`; acmehook on etcd then serves
// it without ordering again, list shows it, no private key is readable in
// etcd, the files are left, and nodes lists no live node once the
// commands have exited.
func TestE2EMigrateToEtcd(t *testing.T) {
	s := newSite(t)
	certs := "[[certificate]]\nname = \"mig\"\ndomains = [\"mig.example.com\"]\nsolver = \"webroot\"\n"
	s.write(certs)
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("run on the file storage: %s", o)
	}
	before := s.acmehook("list")

	c := testetcd.Start(t, testetcd.Options{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(s.work.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	storage := fmt.Sprintf(`[storage]
backend = "etcd"
path = "storage"
endpoints = [%q]
node = "n1"
lease_ttl = "5s"
age_recipients = [%q]
age_identity_file = "age.key"

`, c.Endpoints[0], id.Recipient().String())
	s.text = storage + strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		t.Fatal(err)
	}

	o := s.acmehook("storage", "migrate", "--to", "etcd")
	if o.code != 0 || !strings.Contains(o.stdout, "copied and verified") || !strings.Contains(o.stdout, "1 certificates") {
		t.Fatalf("storage migrate: %s", o)
	}
	if _, err := os.Stat(filepath.Join(s.work.Dir, "storage", "certificates", "mig", "current")); err != nil {
		t.Errorf("the file storage lost its certificate: %v", err)
	}

	o = s.acmehook("run")
	if o.code != 0 || strings.Contains(o.stderr, "obtaining certificate") {
		t.Errorf("run on etcd after the migration ordered again or failed: %s", o)
	}
	// On etcd, list has a DEPLOYED column last: no daemon ran, so no node
	// is live ("0/0").
	after := s.acmehook("list")
	// The run on etcd recorded its deploy of the migrated version anew, so
	// LAST RESULT's time may be a minute later: it is left out.
	sameTable := func(a, b string) bool {
		return lastResultTime.ReplaceAllString(a, "$1 TIME") == lastResultTime.ReplaceAllString(b, "$1 TIME")
	}
	if after.code != 0 || !sameTable(withoutLastColumn(after.stdout, "DEPLOYED"), before.stdout) || !strings.Contains(after.stdout, " 0/0\n") {
		t.Errorf("list on etcd =\n%s\nwant what it showed on the file storage and DEPLOYED 0/0:\n%s", after, before.stdout)
	}

	resp, err := c.Client(t).Get(t.Context(), "/acmehook/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 10 {
		t.Errorf("etcd holds %d keys after the migration", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd key %s holds a private key in plain text", kv.Key)
		}
	}

	o = s.acmehook("nodes")
	if o.code != 0 || strings.TrimSpace(o.stdout) != "NODE  VERSION  PID  LAST SEEN  OWNS  WORKING ON" {
		t.Errorf("nodes with no daemon running: %s", o)
	}
	if o := s.acmehook("storage", "migrate", "--to", "etcd"); o.code != 1 || !strings.Contains(o.stderr, "empty storage only") {
		t.Errorf("a second migrate: %s", o)
	}
}

// lastResultTime matches the time in list's LAST RESULT column.
var lastResultTime = regexp.MustCompile(`(issued ok) [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}`)

// withoutLastColumn removes, from every line of a table, the column that
// starts where header starts in the first line (and the spaces before it).
func withoutLastColumn(table, header string) string {
	lines := strings.Split(table, "\n")
	at := strings.Index(lines[0], header)
	if at < 0 {
		return table
	}
	for i, l := range lines {
		if len(l) > at {
			lines[i] = strings.TrimRight(l[:at], " ")
		}
	}
	return strings.Join(lines, "\n")
}

// deploysScript records each deploy (issued or renew) of a node as a file
// CERT.SERIAL in its directory, and a second deploy of the same version as
// CERT.SERIAL.again.
const deploysScript = `
local acmehook = require("acmehook")
local out = %q
local function deployed(ev)
  local f = out .. "/" .. ev.cert_name .. "." .. ev.serial
  if acmehook.files.exists(f) then
    assert(acmehook.files.write(f .. ".again", ev.name))
  end
  assert(acmehook.files.write(f, ev.name))
end
acmehook.on("issued", deployed)
acmehook.on("renew", deployed)
`

// fleetNode is one acmehook daemon of a fleet test, with a configuration
// directory of its own (its events.lua records, its deploys).
type fleetNode struct {
	name    string
	site    *site
	conf    string
	deploys string // where deploys.lua records
	cmd     *exec.Cmd
	out     *sdktest.LogBuffer
}

// newFleet returns nodes a, b, c ... on the etcd cluster c (lease TTL 2 s),
// all with the same age identity and the [[certificate]] tables certs(node).
func newFleet(t *testing.T, c *testetcd.Cluster, n int, certs func(node string) string) []*fleetNode {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*fleetNode
	for i := range n {
		name := string(rune('a' + i))
		s := newSite(t)
		fn := &fleetNode{name: name, site: s, deploys: filepath.Join(s.work.Dir, "deploys")}
		if err := os.Mkdir(fn.deploys, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.work.Dir, "deploys.lua"), []byte(fmt.Sprintf(deploysScript, fn.deploys)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.work.Dir, "age.key"), []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		eps := make([]string, len(c.Endpoints))
		for i, e := range c.Endpoints {
			eps[i] = strconv.Quote(e)
		}
		s.text = fmt.Sprintf("[storage]\nbackend = \"etcd\"\nendpoints = [%s]\nnode = %q\nlease_ttl = \"2s\"\nage_recipients = [%q]\nage_identity_file = \"age.key\"\n\n",
			strings.Join(eps, ", "), name, id.Recipient().String()) +
			strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs(name)
		s.config = filepath.Join(s.work.Dir, "acmehook.toml")
		if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
			t.Fatal(err)
		}
		fn.conf = s.config
		nodes = append(nodes, fn)
	}
	return nodes
}

// start starts the node's daemon; the test's cleanup kills it.
func (n *fleetNode) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	n.cmd = exec.CommandContext(ctx, bins["acmehook"], "--config", n.conf, "daemon")
	n.out = &sdktest.LogBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := n.cmd
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
}

// deployed returns how many versions the node deployed, and how many it
// deployed a second time.
func (n *fleetNode) deployed(t *testing.T) (versions, again int) {
	t.Helper()
	es, err := os.ReadDir(n.deploys)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".again") {
			again++
		} else if !strings.HasPrefix(e.Name(), ".") {
			versions++
		}
	}
	return versions, again
}

// listJSON is `acmehook list --json` run with the node's configuration.
func (n *fleetNode) listJSON(t *testing.T) ListOutput {
	t.Helper()
	o := n.site.acmehook("list", "--json")
	var doc ListOutput
	if err := json.Unmarshal([]byte(o.stdout), &doc); err != nil || o.code != 0 {
		t.Fatalf("list --json: %v\n%s", err, o)
	}
	return doc
}

// finalized is how many orders Pebble finalized so far.
func finalized() int {
	counts, _ := pebble.Counter().Snapshot()
	return counts["POST /finalize-order/"]
}

// TestE2EFleetExactlyOnce: three daemons on a 3-member etcd cluster share
// 200 certificates. Every certificate is ordered exactly once (Pebble
// finalizes 200 orders), each node orders some of them (the split), and
// every node deploys every version exactly once (its deploy script's
// records); list shows 3/3 deployed everywhere and nodes lists the three
// with the certificates each owns.
func TestE2EFleetExactlyOnce(t *testing.T) {
	const total = 200
	c := testetcd.Start(t, testetcd.Options{Members: 3})
	var certs strings.Builder
	for i := range total {
		fmt.Fprintf(&certs, "[[certificate]]\nname = \"c%03d\"\ndomains = [\"c%03d.once.example.com\"]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\"]\n", i, i)
	}
	nodes := newFleet(t, c, 3, func(string) string { return "concurrency = 16\n" + certs.String() })
	before := finalized()
	start := time.Now()
	for _, n := range nodes {
		n.start(t)
	}
	// 200 issuances on a loaded 2-core machine can take longer than
	// waitFor's 30 s; this test is about counts, not speed (BenchmarkFleet).
	for _, n := range nodes {
		if !waitUntil(t, 2*time.Minute, "node "+n.name+" to deploy every certificate", func() bool { v, _ := n.deployed(t); return v >= total }, n.out) {
			t.FailNow()
		}
	}
	t.Logf("%d certificates issued and deployed on 3 nodes in %s", total, time.Since(start).Round(10*time.Millisecond))
	if got := finalized() - before; got != total {
		t.Errorf("Pebble finalized %d orders, want %d (one per certificate)", got, total)
	}
	for _, n := range nodes {
		v, again := n.deployed(t)
		if v != total || again != 0 {
			t.Errorf("node %s deployed %d versions, %d of them twice; want %d once each", n.name, v, again, total)
		}
		if ordered := strings.Count(n.out.String(), "obtaining certificate"); ordered == 0 || ordered == total {
			t.Errorf("node %s ordered %d of the %d certificates; want a share", n.name, ordered, total)
		}
		if strings.Contains(n.out.String(), "level=ERROR") {
			t.Errorf("node %s logged an error:\n%s", n.name, n.out)
		}
	}

	// A node whose 2 s lease lapsed under load is not counted live until
	// it renews its session (within a check interval): look again a few
	// times before failing.
	var o outcome
	problem := ""
	for range 20 {
		problem = ""
		for _, s := range nodes[0].listJSON(t).Certificates {
			if s.Current == nil || s.Deployed == nil || s.Deployed.Nodes != 3 || s.Deployed.Current != 3 {
				problem = fmt.Sprintf("list --json: %s is %+v deployed %+v, want current and 3/3 deployed", s.Name, s.Current, s.Deployed)
				break
			}
		}
		if problem == "" {
			if o = nodes[1].site.acmehook("list"); o.code != 0 || strings.Count(o.stdout, " 3/3\n") != total {
				problem = fmt.Sprintf("list shows 3/3 deployed on %d certificates, want %d:\n%s", strings.Count(o.stdout, " 3/3\n"), total, o)
			}
		}
		if problem == "" {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if problem != "" {
		t.Error(problem)
	}
	o = nodes[2].site.acmehook("nodes", "--json")
	var nd NodesOutput
	if err := json.Unmarshal([]byte(o.stdout), &nd); err != nil || o.code != 0 {
		t.Fatalf("nodes --json: %v\n%s", err, o)
	}
	owned := 0
	for i, n := range nd.Nodes {
		owned += len(n.Certificates)
		if n.Name != nodes[i].name || n.Version == "" || n.PID != nodes[i].cmd.Process.Pid || time.Since(n.LastSeen) > 5*time.Second {
			t.Errorf("nodes --json: node %d is %+v, want %s, pid %d, seen just now", i, n, nodes[i].name, nodes[i].cmd.Process.Pid)
		}
	}
	if len(nd.Nodes) != 3 || owned != total {
		t.Errorf("nodes --json: %d nodes owning %d certificates, want 3 owning %d", len(nd.Nodes), owned, total)
	}
}

// startedOn returns the node whose log says it started ordering cert, or nil.
func startedOn(nodes []*fleetNode, cert string) *fleetNode {
	for _, n := range nodes {
		if n.cmd != nil && n.ordering(cert) {
			return n
		}
	}
	return nil
}

// ordering reports whether the node's log says it started ordering cert.
func (n *fleetNode) ordering(cert string) bool {
	for _, l := range strings.Split(n.out.String(), "\n") {
		if strings.Contains(l, `msg="obtaining certificate"`) && strings.Contains(l, " cert="+cert+" ") {
			return true
		}
	}
	return false
}

// versions returns the stored version IDs of cert, read from etcd itself.
func versions(t *testing.T, c *testetcd.Cluster, cert string) []string {
	t.Helper()
	p := "/acmehook/certificates/" + cert + "/versions/"
	resp, err := c.Client(t).Get(t.Context(), p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, kv := range resp.Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), p), "/")
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestE2EFleetFencing: the node ordering a certificate is paused (SIGSTOP)
// mid-order, with its validation held, past its lease; another node takes
// the certificate over and stores it. Resumed (SIGCONT), the old owner
// finds its lock lost and stops the job before finalizing: Pebble finalized
// the new owner's order only, the loss is logged once at WARN naming the
// certificate and the lock, nothing is written (no write even reaches the
// fence) and the version the new owner stored stays the only one.
func TestE2EFleetFencing(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{Members: 3})
	host := "fence.fleet.example.com"
	nodes := newFleet(t, c, 3, func(string) string {
		return fmt.Sprintf("[[certificate]]\nname = \"fence\"\ndomains = [%q]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\"]\nself_check = false\n", host)
	})
	hd := holds.hold(t, host)
	before := finalized()
	for _, n := range nodes {
		n.start(t)
	}
	if !hd.Arrived() {
		t.Fatal("no validation of the certificate arrived")
	}
	old := startedOn(nodes, "fence")
	if old == nil {
		t.Fatalf("a validation arrived, but no node says it is ordering")
	}
	old.cmd.Process.Signal(syscall.SIGSTOP)
	paused := time.Now()
	hd.Release()
	var taker *fleetNode
	waitFor(t, "another node to take the certificate over", func() bool {
		for _, n := range nodes {
			if n != old && n.ordering("fence") {
				taker = n
				return true
			}
		}
		return false
	}, old.out)
	t.Logf("node %s took over from the paused node %s after %s (lease TTL 2s)", taker.name, old.name, time.Since(paused).Round(10*time.Millisecond))
	waitFor(t, "the new owner to store and deploy the certificate", func() bool { v, _ := taker.deployed(t); return v == 1 }, taker.out)
	stored := versions(t, c, "fence")
	if len(stored) != 1 {
		t.Fatalf("stored versions %v, want the new owner's only", stored)
	}

	old.cmd.Process.Signal(syscall.SIGCONT)
	const lost = `level=WARN msg="this node lost the certificate's lock: stopping its job before any further request to the CA; the node that took it over carries on" cert=fence lock=certificates/fence`
	waitFor(t, "the old owner to stop its job", func() bool { return strings.Contains(old.out.String(), lost) }, old.out)
	// It rejoins, and deploys the version the new owner stored.
	waitFor(t, "the old owner to deploy the new owner's version", func() bool { v, _ := old.deployed(t); return v == 1 }, old.out)
	if got := finalized() - before; got != 1 {
		t.Errorf("Pebble finalized %d orders, want 1 (the new owner's; the paused node must not finalize)", got)
	}
	if n := strings.Count(old.out.String(), "this node lost the certificate's lock"); n != 1 {
		t.Errorf("the old owner logged the lost lock %d times, want once:\n%s", n, old.out)
	}
	if strings.Contains(old.out.String(), "write refused") {
		t.Errorf("the old owner tried to write after it lost the lock:\n%s", old.out)
	}
	if got := versions(t, c, "fence"); !slices.Equal(got, stored) {
		t.Errorf("stored versions after the old owner resumed = %v, want %v (no version overwritten)", got, stored)
	}
	doc := taker.listJSON(t)
	st := doc.Certificates[0]
	if st.Current == nil || st.Current.Version != stored[0] {
		t.Errorf("current after the old owner resumed = %+v, want version %s", st.Current, stored[0])
	}
	if st.Next != "none" || st.LastEvent == nil || st.LastEvent.Event == "failed" {
		t.Errorf("state after the old owner resumed: next %q, last event %+v; want none and no failure recorded", st.Next, st.LastEvent)
	}
}

// TestE2EFleetTakeover: the node ordering a certificate is killed
// (SIGKILL) mid-run; the others take its certificates over within the lease
// TTL and a check interval, and finish every certificate, each ordered
// once. Started again, the killed node deploys what it missed without
// ordering.
func TestE2EFleetTakeover(t *testing.T) {
	const total = 12
	c := testetcd.Start(t, testetcd.Options{Members: 3})
	var certs strings.Builder
	for i := range total {
		fmt.Fprintf(&certs, "[[certificate]]\nname = \"t%02d\"\ndomains = [\"t%02d.takeover.example.com\"]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\"]\n", i, i)
		if i == 0 {
			certs.WriteString("self_check = false\n") // the held request is the CA's validation
		}
	}
	nodes := newFleet(t, c, 3, func(string) string { return certs.String() })
	hd := holds.hold(t, "t00.takeover.example.com")
	before := finalized()
	for _, n := range nodes {
		n.start(t)
	}
	if !hd.Arrived() {
		t.Fatal("no validation of t00 arrived")
	}
	dead := startedOn(nodes, "t00")
	if dead == nil {
		t.Fatal("a validation of t00 arrived, but no node says it is ordering it")
	}
	var live []*fleetNode
	for _, n := range nodes {
		if n != dead {
			live = append(live, n)
		}
	}
	// The others finish what they can; t00 stays in flight on dead, which
	// deploys what the others stored meanwhile. Killed between a deploy
	// script and its deploy record, it would rightly run that deploy again
	// when it restarts, so the kill waits for its records too.
	cli := c.Client(t)
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to deploy every certificate but t00", func() bool { v, _ := n.deployed(t); return v >= total-1 }, n.out)
	}
	waitFor(t, "node "+dead.name+" to record its deploys", func() bool { return recordedOK(t, cli, dead.name) >= total-1 }, dead.out)
	dead.cmd.Process.Kill()
	killed := time.Now()
	hd.Release()
	var taker *fleetNode
	waitFor(t, "another node to take t00 over", func() bool {
		for _, n := range live {
			if n.ordering("t00") {
				taker = n
				return true
			}
		}
		return false
	}, live[0].out)
	took := time.Since(killed)
	bound := 2*time.Second + fleet.CheckInterval(2*time.Second)
	t.Logf("node %s took t00 over %s after node %s was killed (bound: lease TTL 2s + check interval %s)", taker.name, took.Round(10*time.Millisecond), dead.name, fleet.CheckInterval(2*time.Second))
	if took > bound {
		t.Errorf("takeover took %s, want at most the lease TTL and a check interval, %s", took, bound)
	}
	for _, n := range live {
		waitFor(t, "node "+n.name+" to deploy every certificate", func() bool { v, _ := n.deployed(t); return v >= total }, n.out)
	}
	if got := finalized() - before; got != total {
		t.Errorf("Pebble finalized %d orders, want %d", got, total)
	}

	// Started again, the killed node deploys what it missed (t00 at least),
	// and orders nothing.
	dead.start(t)
	waitFor(t, "the restarted node to catch up", func() bool { v, _ := dead.deployed(t); return v >= total }, dead.out)
	for _, n := range nodes {
		if v, again := n.deployed(t); v != total || again != 0 {
			t.Errorf("node %s deployed %d versions, %d twice; want %d once", n.name, v, again, total)
		}
	}
	if got := finalized() - before; got != total {
		t.Errorf("after the restart Pebble finalized %d orders, want %d", got, total)
	}
}

// recordedOK is how many deploy records of node in etcd (under the default
// prefix) say its deploy succeeded.
func recordedOK(t *testing.T, cli *clientv3.Client, node string) int {
	t.Helper()
	resp, err := cli.Get(t.Context(), "/acmehook/.deploys/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("reading the deploy records: %v", err)
	}
	ok := 0
	for _, kv := range resp.Kvs {
		var rec engine.DeployRecord
		if strings.HasSuffix(string(kv.Key), "/"+node) && json.Unmarshal(kv.Value, &rec) == nil && rec.Result == "ok" {
			ok++
		}
	}
	return ok
}

// runEndScript records each run-end that deployed something as a file
// .runend.NAMES (the deployed names, comma-separated) in its directory.
const runEndScript = `
local acmehook = require("acmehook")
local out = %q
acmehook.on("run-end", function(ev)
  if #ev.deployed == 0 then return end
  assert(acmehook.files.write(out .. "/.runend." .. table.concat(ev.deployed, ","), "run-end"))
end)
`

// ownedBy returns a certificate name starting with prefix that Owner
// gives to node among nodes.
func ownedBy(nodes []string, node, prefix string) string {
	for i := 0; ; i++ {
		if name := fmt.Sprintf("%s%d", prefix, i); fleet.Owner(nodes, name) == node {
			return name
		}
	}
}

// TestE2EFleetMidRun: a daemon in the middle of a run (its own order held
// at the CA's validation) does not wait for that run to end. Another
// node's new version is deployed at once, with its own run-end; and when
// that node is killed (SIGKILL) mid-order, the certificate it was ordering
// is started within the lease TTL and a check interval of the kill, and
// stored, while the first run is still in progress; a SIGHUP then waits
// for the runs to end. Every certificate is finalized once, and deployed
// once.
func TestE2EFleetMidRun(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	members := []string{"a", "b"}
	long, fresh, taken := ownedBy(members, "a", "long"), ownedBy(members, "b", "fresh"), ownedBy(members, "b", "taken")
	cert := func(name string) string {
		return fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [\"%s.midrun.example.com\"]\nsolver = \"webroot\"\nscripts = [\"deploys.lua\", \"runend.lua\"]\nself_check = false\n", name, name)
	}
	nodes := newFleet(t, c, 2, func(string) string { return "concurrency = 4\n" + cert("warm") })
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		if err := os.WriteFile(filepath.Join(n.site.work.Dir, "runend.lua"), []byte(fmt.Sprintf(runEndScript, n.deploys)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := finalized()
	for _, n := range nodes {
		n.start(t)
	}
	// Both nodes are members once each deployed the first certificate;
	// then both get the three others (SIGHUP), so each orders its own.
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to deploy warm", func() bool { v, _ := n.deployed(t); return v == 1 }, n.out)
	}
	holdLong, holdFresh, holdTaken := holds.hold(t, long+".midrun.example.com"), holds.hold(t, fresh+".midrun.example.com"), holds.hold(t, taken+".midrun.example.com")
	for _, n := range nodes {
		if err := os.WriteFile(n.conf, []byte(n.site.text+cert(long)+cert(fresh)+cert(taken)), 0o644); err != nil {
			t.Fatal(err)
		}
		n.cmd.Process.Signal(syscall.SIGHUP)
	}
	for _, hd := range []*hold{holdLong, holdFresh, holdTaken} {
		if !hd.Arrived() {
			t.Fatalf("not every validation arrived; a:\n%s\nb:\n%s", a.out, b.out)
		}
	}
	for cert, n := range map[string]*fleetNode{long: a, fresh: b, taken: b} {
		if !n.ordering(cert) {
			t.Fatalf("node %s is not ordering %s, its owner; log:\n%s", n.name, cert, n.out)
		}
	}
	bound := 2*time.Second + fleet.CheckInterval(2*time.Second)
	// a's run stays in progress as long as its validation of long is held.
	inProgress := func(what string) {
		t.Helper()
		select {
		case <-holdLong.release:
			t.Fatalf("%s: the validation of %s was released", what, long)
		default:
		}
		if strings.Contains(a.out.String(), "cert="+long+" version=") {
			t.Fatalf("%s: node a stored %s, its run is over", what, long)
		}
	}

	// Another node's new version is deployed at once, in a run of its own
	// whose run-end the scripts get now, not when a's run ends.
	holdFresh.Release()
	waitFor(t, "b to store and deploy "+fresh, func() bool { return deployedOn(t, b, fresh) }, b.out)
	stored := time.Now()
	if waitUntil(t, bound, "a to deploy "+fresh+" while its run is in progress", func() bool {
		return deployedOn(t, a, fresh) && exists(filepath.Join(a.deploys, ".runend."+fresh))
	}, a.out) {
		t.Logf("node a deployed b's new version (and raised its run-end) %s after b stored it", time.Since(stored).Round(time.Millisecond))
	}
	inProgress("after the deploy of " + fresh)

	// b dies mid-order: a starts on what b was ordering within the lease
	// TTL and a check interval, and stores it, while its run goes on.
	b.cmd.Process.Kill()
	killed := time.Now()
	holdTaken.Release()
	if !waitUntil(t, bound, "a to take "+taken+" over while its run is in progress", func() bool { return a.ordering(taken) }, a.out) {
		t.FailNow()
	}
	t.Logf("node a took %s over %s after node b was killed (bound: lease TTL 2s + check interval %s)", taken, time.Since(killed).Round(10*time.Millisecond), fleet.CheckInterval(2*time.Second))
	waitFor(t, "a to store and deploy "+taken, func() bool { return deployedOn(t, a, taken) }, a.out)
	inProgress("after the takeover of " + taken)

	// A SIGHUP in the middle of a run takes effect once the runs in
	// progress have ended.
	reloaded := func() int { return strings.Count(a.out.String(), `msg="configuration reloaded"`) }
	a.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(200 * time.Millisecond)
	if reloaded() != 1 {
		t.Errorf("node a reloaded its configuration %d times during its run, want once (the SIGHUP before it)", reloaded())
	}
	inProgress("after the SIGHUP")

	holdLong.Release()
	waitFor(t, "a to finish its run", func() bool { return deployedOn(t, a, long) }, a.out)
	waitFor(t, "a to reload once its run ended", func() bool { return reloaded() == 2 }, a.out)
	if v, again := a.deployed(t); v != 4 || again != 0 {
		t.Errorf("node a deployed %d versions, %d twice; want 4 once each", v, again)
	}
	if got := finalized() - before; got != 4 {
		t.Errorf("Pebble finalized %d orders, want 4 (one per certificate)", got)
	}
	if strings.Contains(a.out.String(), "level=ERROR") {
		t.Errorf("node a logged an error:\n%s", a.out)
	}
}

// deployedOn reports whether node n's deploy script ran for cert.
func deployedOn(t *testing.T, n *fleetNode, cert string) bool {
	t.Helper()
	es, err := os.ReadDir(n.deploys)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.HasPrefix(e.Name(), cert+".") {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitUntil polls cond every 10ms and reports whether it held within
// bound; if not, the test fails (and goes on).
func waitUntil(t *testing.T, bound time.Duration, what string, cond func() bool, log *sdktest.LogBuffer) bool {
	t.Helper()
	for deadline := time.Now().Add(bound); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s did not happen within %s; log:\n%s", what, bound, log)
			return false
		}
	}
	return true
}

// TestE2EFleetDeployRetry: a node started after the certificate was issued
// deploys it at start; its deploy fails (its deploy target is not ready),
// list says which node lags and why, and after the fix the node deploys
// again (SIGHUP makes it look now) without a new order.
func TestE2EFleetDeployRetry(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	nodes := newFleet(t, c, 2, func(string) string {
		return "[[certificate]]\nname = \"gated-r\"\ndomains = [\"gated-r.fleet.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n"
	})
	a, b := nodes[0], nodes[1]
	if err := os.WriteFile(a.site.work.Gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := finalized()
	a.start(t)
	issued := func(n *fleetNode) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(n.site.work.Events, "gated-r.issued.json"))
			return err == nil
		}
	}
	waitFor(t, "a to issue and deploy", issued(a), a.out)
	b.start(t)
	var lag *NodeDeploy
	waitFor(t, "b's deploy to fail", func() bool {
		d := a.listJSON(t).Certificates[0].Deployed
		if d != nil && len(d.Lagging) == 1 && d.Lagging[0].Result == "error" {
			lag = &d.Lagging[0]
			return true
		}
		return false
	}, b.out)
	if lag.Node != "b" || !strings.Contains(lag.Error, "deploy target not ready") {
		t.Errorf("lagging = %+v, want b with the script's error", lag)
	}
	if o := a.site.acmehook("list"); !strings.Contains(o.stdout, "1/2 (b: error: ") {
		t.Errorf("list does not say b lags and why:\n%s", o)
	}
	if err := os.WriteFile(b.site.work.Gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "b to deploy after the fix", func() bool {
		d := a.listJSON(t).Certificates[0].Deployed
		return d != nil && d.Current == 2
	}, b.out)
	if !issued(b)() {
		t.Error("b's script did not get issued")
	}
	if got := finalized() - before; got != 1 {
		t.Errorf("Pebble finalized %d orders, want 1", got)
	}
}

// fleetSite writes, for node, a configuration on the etcd cluster c with
// the certificates certs, and returns its path.
func fleetSite(t *testing.T, s *site, c *testetcd.Cluster, id *age.X25519Identity, node, certs string) string {
	t.Helper()
	idFile := filepath.Join(s.work.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("[storage]\nbackend = \"etcd\"\nendpoints = [%q]\nnode = %q\nlease_ttl = \"2s\"\nage_recipients = [%q]\nage_identity_file = \"age.key\"\n\n",
		c.Endpoints[0], node, id.Recipient().String()) +
		strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs
	p := filepath.Join(s.work.Dir, node+".toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// acmehookWith is acmehook with another configuration file.
func (s *site) acmehookWith(conf string, args ...string) outcome {
	s.t.Helper()
	saved := s.config
	defer func() { s.config = saved }()
	s.config = conf
	return s.acmehook(args...)
}
