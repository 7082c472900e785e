package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

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
	if after.code != 0 || withoutLastColumn(after.stdout, "DEPLOYED") != before.stdout || !strings.Contains(after.stdout, " 0/0\n") {
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
	for _, n := range nodes {
		waitFor(t, "node "+n.name+" to deploy every certificate", func() bool { v, _ := n.deployed(t); return v >= total }, n.out)
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

	doc := nodes[0].listJSON(t)
	for _, s := range doc.Certificates {
		if s.Current == nil || s.Deployed == nil || s.Deployed.Nodes != 3 || s.Deployed.Current != 3 {
			t.Fatalf("list --json: %s is %+v deployed %+v, want current and 3/3 deployed", s.Name, s.Current, s.Deployed)
		}
	}
	if o := nodes[1].site.acmehook("list"); o.code != 0 || strings.Count(o.stdout, " 3/3\n") != total {
		t.Errorf("list shows 3/3 deployed on %d certificates, want %d:\n%s", strings.Count(o.stdout, " 3/3\n"), total, o)
	}
	o := nodes[2].site.acmehook("nodes", "--json")
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
