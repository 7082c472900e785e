package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/internal/front"
	"github.com/acmehook/acmehook/internal/testetcd"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// The relay tests' shared environment: the standalone plugin, built once,
// and one Pebble, whose validation ports the tests' fronts listen on.
var relayEnv struct {
	once       sync.Once
	err        error
	dir        string
	standalone string
	pebble     *pebbletest.Server
}

func TestMain(m *testing.M) {
	code := m.Run()
	if relayEnv.pebble != nil {
		relayEnv.pebble.Close()
	}
	if relayEnv.dir != "" {
		os.RemoveAll(relayEnv.dir)
	}
	os.Exit(code)
}

func setupRelayEnv(t *testing.T) {
	t.Helper()
	e := &relayEnv
	e.once.Do(func() {
		if e.dir, e.err = os.MkdirTemp("", "acmehook-relay-"); e.err != nil {
			return
		}
		e.standalone = filepath.Join(e.dir, "standalone")
		out, err := exec.Command("go", "build", "-o", e.standalone, "github.com/acmehook/acmehook/plugins/standalone").CombinedOutput()
		if err != nil {
			e.err = fmt.Errorf("building standalone: %w\n%s", err, out)
			return
		}
		e.pebble, e.err = pebbletest.New(pebbletest.Options{})
	})
	if e.err != nil {
		t.Fatal(e.err)
	}
}

// fleetNode is one node of a test fleet: its configuration, its plugins
// (a standalone process on ports of its own) and its relay.
type fleetNode struct {
	name              string
	cfg               *config.Config
	plugins           *engine.Plugins
	relay             *Relay
	httpAddr, tlsAddr string
}

// testFleet is n nodes on one etcd cluster, behind fronts on Pebble's
// validation ports (round-robin, counting) and a second http-01 front
// for the owner's self-check.
type testFleet struct {
	nodes                   []*fleetNode
	etcd                    *testetcd.Cluster
	prefix                  string
	httpFront, tlsFront, sc *front.Front
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// startFleet writes a configuration per node with certs, starts the
// nodes' relays and the fronts. endpoints, when set, gives a node's etcd
// endpoints (a proxy the test can freeze).
func startFleet(t *testing.T, c *testetcd.Cluster, n int, certs, relayTimeout string, endpoints map[int][]string) *testFleet {
	t.Helper()
	setupRelayEnv(t)
	p := relayEnv.pebble
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	idFile := filepath.Join(dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &testFleet{etcd: c, prefix: "/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"}
	scAddr := freeAddr(t)
	_, scPort, _ := net.SplitHostPort(scAddr)
	for i := range n {
		nd := &fleetNode{name: fmt.Sprintf("n%d", i+1), httpAddr: freeAddr(t), tlsAddr: freeAddr(t)}
		eps := c.Endpoints
		if endpoints[i] != nil {
			eps = endpoints[i]
		}
		epList, _ := json.Marshal(eps)
		text := fmt.Sprintf(`[storage]
backend = "etcd"
endpoints = %s
prefix = %q
node = %q
lease_ttl = "5s"
relay_timeout = %q
age_recipients = [%q]
age_identity_file = %q

[ca]
directory = %q
ca_bundle = %q
agree_tos = true

[self_check]
http_port = %s
tls_port = %d
resolvers = [%q]
timeout = "5s"

[plugins.standalone]
path = %q
[plugins.standalone.config]
http_listen = [%q]
tls_listen = [%q]
%s`, epList, f.prefix, nd.name, relayTimeout, id.Recipient(), idFile,
			p.DirectoryURL, p.CAFile, scPort, p.TLSPort, p.DNSAddr,
			relayEnv.standalone, nd.httpAddr, nd.tlsAddr, certs)
		ndir := filepath.Join(dir, nd.name)
		os.Mkdir(ndir, 0o755)
		path := filepath.Join(ndir, "acmehook.toml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if nd.cfg, err = config.Load(path); err != nil {
			t.Fatalf("loading %s's configuration: %v\n%s", nd.name, err, text)
		}
		log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("test_node", nd.name)
		nd.plugins = engine.NewPlugins(nd.cfg, log)
		t.Cleanup(func() { nd.plugins.Close() })
		if nd.relay, err = StartRelay(t.Context(), nd.cfg.Store, RelayOptions{Answerer: nd.plugins, Logger: log}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.relay.Close() })
		f.nodes = append(f.nodes, nd)
	}
	var https, tlss []string
	for _, nd := range f.nodes {
		https, tlss = append(https, nd.httpAddr), append(tlss, nd.tlsAddr)
	}
	start := func(addr string, to []string) *front.Front {
		fr, err := front.Start(addr, to, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fr.Close)
		return fr
	}
	f.httpFront = start(net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HTTPPort)), https)
	f.tlsFront = start(net.JoinHostPort("127.0.0.1", strconv.Itoa(p.TLSPort)), tlss)
	f.sc = start(scAddr, https)
	f.waitMembers(t, n)
	return f
}

// waitMembers waits until n nodes registered as answering.
func (f *testFleet) waitMembers(t *testing.T, n int) {
	t.Helper()
	cli := f.etcd.Client(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(t.Context(), f.prefix+".relay/members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == int64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay members = %v (%v), want %d", resp, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// engine returns an engine of node i that orders through its relay, on
// the fleet's storage.
func (f *testFleet) engine(t *testing.T, i int) *engine.Engine {
	t.Helper()
	nd := f.nodes[i]
	st, err := OpenStore(t.Context(), nd.cfg.Store, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Options{Config: nd.cfg, Store: st, Relay: nd.relay, Plugins: nd.plugins,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("test_node", nd.name, "owner", true)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// recordTokens records every challenge published below the fleet's
// prefix until the test ends.
func (f *testFleet) recordTokens(t *testing.T) func() map[string]record {
	ctx, cancel := context.WithCancel(context.Background())
	cli := f.etcd.Client(t)
	var mu sync.Mutex
	seen := map[string]record{}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), f.prefix+".relay/challenges/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		for wr := range wch {
			if wr.Created {
				close(ready)
			}
			for _, ev := range wr.Events {
				var rec record
				if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &rec) == nil {
					mu.Lock()
					seen[rec.Token] = rec
					mu.Unlock()
				}
			}
		}
	}()
	<-ready
	t.Cleanup(func() { cancel(); <-done })
	return func() map[string]record {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]record{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// serves reports whether the standalone plugin at addr answers http-01
// token (false also when no plugin listens there).
func serves(t *testing.T, addr, token string) bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/.well-known/acme-challenge/" + token)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// relayKeys returns the keys left below the fleet's .relay/challenges/
// and .relay/acks/.
func (f *testFleet) relayKeys(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, p := range []string{".relay/challenges/", ".relay/acks/"} {
		resp, err := f.etcd.Client(t).Get(t.Context(), f.prefix+p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			out = append(out, string(kv.Key))
		}
	}
	return out
}

const relayCerts = `
[[certificate]]
name = "a"
domains = ["a.relay.example.com", "a2.relay.example.com"]
solver = "standalone"
challenge = "http-01"

[[certificate]]
name = "b"
domains = ["b.relay.example.com"]
solver = "standalone"
challenge = "http-01"

[[certificate]]
name = "c"
domains = ["c.relay.example.com", "c2.relay.example.com", "c3.relay.example.com"]
solver = "standalone"
challenge = "http-01"

[[certificate]]
name = "tls"
domains = ["tls.relay.example.com", "tls2.relay.example.com"]
solver = "standalone"
challenge = "tls-alpn-01"
`

// TestAnyNodeAnswers: three nodes on a 3-member etcd, each with its own
// standalone plugin, behind round-robin fronts on Pebble's validation
// ports. Node n1 orders every certificate; the validations that the
// fronts sent to n2 and n3 succeed, so every certificate is issued; once
// the run is over no node serves any of the challenges and no relay key
// is left in etcd.
func TestAnyNodeAnswers(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{Members: 3})
	f := startFleet(t, c, 3, relayCerts, "10s", nil)
	tokens := f.recordTokens(t)
	eng := f.engine(t, 0)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	res, err := eng.Run(ctx, engine.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Results {
		if r.Action != engine.ActionIssued || r.Err != nil {
			t.Errorf("%s: %s, %v; want issued", r.Name, r.Action, r.Err)
		}
	}
	httpCounts, tlsCounts := f.httpFront.Counts(), f.tlsFront.Counts()
	t.Logf("validations by node: http-01 %v, tls-alpn-01 %v; self-checks %v", httpCounts, tlsCounts, f.sc.Counts())
	if httpCounts[1]+httpCounts[2] == 0 || tlsCounts[1]+tlsCounts[2] == 0 {
		t.Errorf("no validation landed on a non-owner node: http-01 %v, tls-alpn-01 %v", httpCounts, tlsCounts)
	}
	if f.httpFront.Failed()+f.tlsFront.Failed() > 0 {
		t.Errorf("the fronts could not reach a node %d times", f.httpFront.Failed()+f.tlsFront.Failed())
	}

	recs := tokens()
	var https int
	for tok, rec := range recs {
		if rec.Owner != "n1" {
			t.Errorf("challenge %s published by %s, want n1", tok, rec.Owner)
		}
		if rec.Type != acme.ChallengeHTTP01 {
			continue
		}
		https++
		for _, nd := range f.nodes {
			if serves(t, nd.httpAddr, tok) {
				t.Errorf("node %s still serves token %s (%s) after the run", nd.name, tok, rec.Identifier.Value)
			}
		}
	}
	if len(recs) != 8 || https != 6 {
		t.Errorf("published %d challenges (%d http-01), want 8 (6)", len(recs), https)
	}
	if left := f.relayKeys(t); len(left) > 0 {
		t.Errorf("relay keys left in etcd after the run: %v", left)
	}
}

// TestNodeDoesNotAck: node n3 is cut off from etcd (its connection
// frozen, its lease not yet expired): the owner does not answer the CA,
// and its error names n3 once relay_timeout has passed. Once n3's lease
// expired, the owner no longer waits for it.
func TestNodeDoesNotAck(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{Members: 3})
	proxy := testetcd.StartProxy(t, c.Members()[2])
	f := startFleet(t, c, 3, `
[[certificate]]
name = "solo"
domains = ["solo.relay.example.com"]
solver = "standalone"
challenge = "http-01"
`, "1s", map[int][]string{2: {proxy.URL}})
	eng := f.engine(t, 0)
	proxy.Pause()
	defer proxy.Resume()

	start := time.Now()
	res, err := eng.Run(t.Context(), engine.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Results[0]
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), r.Err)
	if !errors.Is(r.Err, ErrNotAnswered) || !strings.Contains(r.Err.Error(), "node n3 did not present it within 1s (storage.relay_timeout)") {
		t.Errorf("result = %s, %v; want ErrNotAnswered naming node n3", r.Action, r.Err)
	}
	if strings.Contains(r.Err.Error(), "n2") {
		t.Errorf("error names n2, which answered: %v", r.Err)
	}
	if n := f.httpFront.Counts(); n[0]+n[1]+n[2] != 0 {
		t.Errorf("the CA validated (%v connections) a challenge not every node presented", n)
	}

	// Once n3's lease expired (5 s), it is no longer a live node: the
	// certificate is issued with n1 and n2 answering.
	f.waitMembers(t, 2)
	res, err = eng.Run(t.Context(), engine.RunOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Results[0]; r.Action != engine.ActionIssued {
		t.Errorf("after n3's lease expired: %s, %v; want issued", r.Action, r.Err)
	}
}

// TestRelayCatchUp: without a CA, a challenge published by n1 is served
// by n2 and by n3, which started only after it was published; a node
// whose configuration lacks the certificate fails the publication, named
// with its reason; after Withdraw no node serves it; a node restarted
// while a challenge is published presents it again.
func TestRelayCatchUp(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	cert := `
[[certificate]]
name = "cu"
domains = ["cu.relay.example.com"]
solver = "standalone"
challenge = "http-01"
`
	f := startFleet(t, c, 2, cert, "5s", nil)
	n1, n2 := f.nodes[0], f.nodes[1]
	ch := relayTestChallenge(t, "cu", "cu.relay.example.com")
	ctx := t.Context()
	if err := n1.relay.Publish(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if !serves(t, n2.httpAddr, ch.Token) {
		t.Error("n2 does not serve the token Publish returned for")
	}
	if serves(t, n1.httpAddr, ch.Token) {
		t.Error("n1's relay presented its own challenge (its engine presents it)")
	}

	// n3 joins while the challenge is published, and presents it.
	g := startFleetNode(t, f, "n3", cert)
	waitFor(t, "n3 to present the published challenge", func() bool { return serves(t, g.httpAddr, ch.Token) })

	// n2 restarts: it cleans up, then presents again what is published.
	n2.relay.Close()
	if serves(t, n2.httpAddr, ch.Token) {
		t.Error("n2 still serves the token after its relay closed")
	}
	r2, err := StartRelay(ctx, n2.cfg.Store, RelayOptions{Answerer: n2.plugins})
	if err != nil {
		t.Fatal(err)
	}
	n2.relay = r2
	waitFor(t, "restarted n2 to present the published challenge", func() bool { return serves(t, n2.httpAddr, ch.Token) })
	// Withdraw waits for the nodes that acknowledged the challenge: n2
	// serves it a moment before its acknowledgement is written.
	waitFor(t, "restarted n2 to acknowledge the published challenge", func() bool {
		return slices.Contains(f.relayKeys(t), f.prefix+".relay/acks/"+ch.Token+"/n2")
	})

	if err := n1.relay.Withdraw(ctx, ch); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*fleetNode{n2, g} {
		if serves(t, nd.httpAddr, ch.Token) {
			t.Errorf("%s serves the token after Withdraw returned", nd.name)
		}
	}

	// A node without the certificate fails the publication at once.
	startFleetNode(t, f, "n4", strings.ReplaceAll(cert, `name = "cu"`, `name = "other"`))
	ch2 := relayTestChallenge(t, "cu", "cu.relay.example.com")
	start := time.Now()
	err = n1.relay.Publish(ctx, ch2)
	if !errors.Is(err, ErrNotAnswered) || !strings.Contains(err.Error(), `node n4: engine: no such certificate in the configuration: "cu" (on this node)`) || time.Since(start) > 4*time.Second {
		t.Errorf("Publish with n4 lacking the certificate = %v after %s; want ErrNotAnswered naming n4 and why, at once", err, time.Since(start))
	}
	if err := n1.relay.Withdraw(ctx, ch2); err != nil {
		t.Errorf("Withdraw after a failed Publish = %v", err)
	}
	if left := f.relayKeys(t); len(left) > 0 {
		t.Errorf("relay keys left in etcd: %v", left)
	}
}

// startFleetNode adds a node called name to f with its own configuration
// (certs), plugins and relay, and waits until it registered.
func startFleetNode(t *testing.T, f *testFleet, name, certs string) *fleetNode {
	t.Helper()
	src := f.nodes[0].cfg
	nd := &fleetNode{name: name, httpAddr: freeAddr(t), tlsAddr: freeAddr(t)}
	s := src.Store
	text := fmt.Sprintf(`[storage]
backend = "etcd"
endpoints = [%q]
prefix = %q
node = %q
lease_ttl = "5s"
age_recipients = [%q]
age_identity_file = %q

[ca]
directory = %q

[plugins.standalone]
path = %q
[plugins.standalone.config]
http_listen = [%q]
tls_listen = [%q]
%s`, s.Endpoints[0], s.Prefix, name, s.AgeRecipients[0], s.AgeIdentityFile, src.CA.Directory,
		relayEnv.standalone, nd.httpAddr, nd.tlsAddr, certs)
	path := filepath.Join(t.TempDir(), "acmehook.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if nd.cfg, err = config.Load(path); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	nd.plugins = engine.NewPlugins(nd.cfg, nil)
	t.Cleanup(func() { nd.plugins.Close() })
	if nd.relay, err = StartRelay(t.Context(), nd.cfg.Store, RelayOptions{Answerer: nd.plugins}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.relay.Close() })
	f.nodes = append(f.nodes, nd)
	f.waitMembers(t, len(f.nodes))
	return nd
}

// relayTestChallenge is an http-01 challenge for id of cert that no CA
// issued (host.SyntheticTask, as check --solve makes).
func relayTestChallenge(t *testing.T, cert, id string) engine.RelayChallenge {
	t.Helper()
	task, err := host.SyntheticTask(acme.Identifier{Type: "dns", Value: id}, acme.ChallengeHTTP01)
	if err != nil {
		t.Fatal(err)
	}
	return engine.RelayChallenge{Cert: cert, Type: acme.ChallengeHTTP01, Identifier: task.Authorization.Identifier,
		Token: task.Challenge.Token, KeyAuthorization: task.KeyAuthorization}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPublishOnly: a relay without an Answerer (a one-shot `acmehook
// issue` on node n1 beside the daemons) registers nothing and waits for
// the other nodes' daemons, not n1's (the one-shot process presents the
// challenge itself on n1): n2 serves it once Publish returned, n1's
// daemon does not, and no node after Withdraw.
func TestPublishOnly(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	f := startFleet(t, c, 2, `
[[certificate]]
name = "po"
domains = ["po.relay.example.com"]
solver = "standalone"
challenge = "http-01"
`, "5s", nil)
	ctx := t.Context()
	one, err := StartRelay(ctx, f.nodes[0].cfg.Store, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	ch := relayTestChallenge(t, "po", "po.relay.example.com")
	if err := one.Publish(ctx, ch); err != nil {
		t.Fatal(err)
	}
	f.waitMembers(t, 2) // the one-shot relay did not register
	if !serves(t, f.nodes[1].httpAddr, ch.Token) {
		t.Error("n2's daemon does not serve the challenge Publish returned for")
	}
	if serves(t, f.nodes[0].httpAddr, ch.Token) {
		t.Error("n1's daemon presented a challenge its own node published")
	}
	if err := one.Withdraw(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if serves(t, f.nodes[1].httpAddr, ch.Token) {
		t.Error("n2 serves the challenge after Withdraw returned")
	}
	if left := f.relayKeys(t); len(left) > 0 {
		t.Errorf("relay keys left: %v", left)
	}
}

// TestCheckSolveFleet: `check --solve` on a fleet publishes its synthetic
// challenges, so a self-check through a load balancer that never reaches
// the checking node (n1) passes; without the relay it fails.
func TestCheckSolveFleet(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	f := startFleet(t, c, 3, `
[[certificate]]
name = "cs"
domains = ["cs.relay.example.com", "cs2.relay.example.com"]
solver = "standalone"
challenge = "http-01"
`, "5s", nil)
	others, err := front.Start("127.0.0.1:0", []string{f.nodes[1].httpAddr, f.nodes[2].httpAddr}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer others.Close()
	_, port, _ := net.SplitHostPort(others.Addr)
	cfg := *f.nodes[0].cfg
	cfg.SelfCheck.HTTPPort, _ = strconv.Atoi(port)
	cfg.SelfCheck.Timeout.Duration = time.Second

	relay, err := StartRelay(t.Context(), cfg.Store, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	res, err := engine.CheckSolve(t.Context(), &cfg, "cs", nil, relay)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.OK() {
			t.Errorf("check --solve through the fleet: %s: %v, cleanup %v", r.Identifier, r.Err, r.CleanUpErr)
		}
	}
	if n := others.Counts(); n[0] == 0 || n[1] == 0 {
		t.Errorf("self-checks by node = %v, want some on n2 and on n3", n)
	}
	res, err = engine.CheckSolve(t.Context(), &cfg, "cs", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err == nil {
			t.Errorf("check --solve without the relay: %s passed, want the self-check to fail (n2 and n3 do not serve it)", r.Identifier)
		}
	}
	if left := f.relayKeys(t); len(left) > 0 {
		t.Errorf("relay keys left: %v", left)
	}
}

// TestRelayCloseWithoutEtcd: a relay whose cluster went away (its lease
// expired meanwhile) still closes: no etcd request of the relay waits
// without a bound.
func TestRelayCloseWithoutEtcd(t *testing.T) {
	c := testetcd.Start(t, testetcd.Options{})
	f := startFleet(t, c, 1, "", "5s", nil)
	c.Members()[0].Stop()
	time.Sleep(6 * time.Second) // past the 5 s lease: the relay tries a new one
	done := make(chan error, 1)
	go func() { done <- f.nodes[0].relay.Close() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Relay.Close did not return 30 s after its etcd cluster stopped")
	}
}
