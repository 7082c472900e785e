package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/internal/front"
	"github.com/acmehook/acmehook/internal/testetcd"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// Options say what fleet to start.
type Options struct {
	// Bin holds the acmehook and standalone executables.
	Bin string
	// Dir is the fleet's working directory (configurations, logs,
	// deployed files); it is emptied first.
	Dir string
	// Nodes, Members and Certificates count the daemons, the etcd
	// members and the certificates (one name each, http-01).
	Nodes, Members, Certificates int
	// LeaseTTL is [storage] lease_ttl; Concurrency the daemons'
	// concurrency.
	LeaseTTL    time.Duration
	Concurrency int
	// Random makes the front forward each validation to a random node
	// (round-robin otherwise).
	Random bool
	// Logs receives the daemons' logs (nil: only their log files).
	Logs io.Writer
}

// Fleet is a running fleet: etcd, Pebble (in this process), the front on
// Pebble's http-01 port and the daemons (processes).
type Fleet struct {
	opts    Options
	Etcd    *testetcd.Cluster
	Pebble  *pebbletest.Server
	Front   *front.Front
	Nodes   []*Node
	cli     *clientv3.Client
	prefix  string
	started time.Time
}

// Node is one acmehook daemon.
type Node struct {
	Name, Dir, Config string
	// HTTPAddr is where its standalone plugin answers http-01.
	HTTPAddr string
	cmd      *exec.Cmd
	exited   chan struct{}
}

// Start starts etcd, Pebble, the front and the daemons.
func Start(ctx context.Context, o Options) (_ *Fleet, err error) {
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "etcd"), 0o755); err != nil {
		return nil, err
	}
	f := &Fleet{opts: o, prefix: "/acmehook/"}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if f.Etcd, err = testetcd.New(testetcd.Options{Members: o.Members, Dir: filepath.Join(o.Dir, "etcd")}); err != nil {
		return nil, err
	}
	cc, err := f.Etcd.ClientConfig()
	if err != nil {
		return nil, err
	}
	if f.cli, err = clientv3.New(cc); err != nil {
		return nil, err
	}
	if f.Pebble, err = pebbletest.New(pebbletest.Options{}); err != nil {
		return nil, err
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	idFile := filepath.Join(o.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		return nil, err
	}
	var backends []string
	for i := range o.Nodes {
		port, err := pebbletest.FreePort()
		if err != nil {
			return nil, err
		}
		n := &Node{Name: fmt.Sprintf("n%d", i+1), Dir: filepath.Join(o.Dir, fmt.Sprintf("n%d", i+1)),
			HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if err := os.MkdirAll(filepath.Join(n.Dir, "deployed"), 0o755); err != nil {
			return nil, err
		}
		n.Config = filepath.Join(n.Dir, "acmehook.toml")
		if err := os.WriteFile(n.Config, []byte(f.config(n, id.Recipient().String(), idFile, o.Certificates)), 0o644); err != nil {
			return nil, err
		}
		f.Nodes = append(f.Nodes, n)
		backends = append(backends, n.HTTPAddr)
	}
	if f.Front, err = front.Start(net.JoinHostPort("127.0.0.1", strconv.Itoa(f.Pebble.HTTPPort)), backends, o.Random); err != nil {
		return nil, err
	}
	f.started = time.Now()
	for _, n := range f.Nodes {
		if err := f.StartNode(n); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// AddCertificate adds one certificate to every node's configuration
// (each daemon reads it on SIGHUP) and returns its name.
func (f *Fleet) AddCertificate() (string, error) {
	name := certName(f.opts.Certificates)
	f.opts.Certificates++
	for _, n := range f.Nodes {
		fh, err := os.OpenFile(n.Config, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "", err
		}
		_, err = io.WriteString(fh, certTable(f.opts.Certificates-1))
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
	}
	return name, nil
}

func certTable(i int) string {
	return fmt.Sprintf(`
[[certificate]]
name = "%s"
domains = ["%s.fleet.example.com"]
solver = "standalone"
challenge = "http-01"
[certificate.output]
fullchain = "deployed/%s.pem"
`, certName(i), certName(i), certName(i))
}

// config is node n's acmehook.toml with certs certificates.
func (f *Fleet) config(n *Node, recipient, idFile string, certs int) string {
	eps, _ := json.Marshal(f.Etcd.Endpoints)
	var b strings.Builder
	fmt.Fprintf(&b, `# acmehook.toml of fleet node %s (written by internal/fleetdemo)
concurrency = %d

[storage]
backend = "etcd"
endpoints = %s
node = %q
lease_ttl = %q
age_recipients = [%q]
age_identity_file = %q

[ca]
directory = %q
ca_bundle = %q
agree_tos = true

[self_check]
resolvers = [%q]
http_port = %d
timeout = "10s"

[plugins.standalone]
path = %q
[plugins.standalone.config]
http_listen = [%q]
tls_listen = []
`, n.Name, max(f.opts.Concurrency, 1), eps, n.Name, f.opts.LeaseTTL.String(), recipient, idFile,
		f.Pebble.DirectoryURL, f.Pebble.CAFile, f.Pebble.DNSAddr, f.Pebble.HTTPPort,
		filepath.Join(f.opts.Bin, "standalone"), n.HTTPAddr)
	for i := range certs {
		b.WriteString(certTable(i))
	}
	return b.String()
}

func certName(i int) string { return fmt.Sprintf("site%03d", i+1) }

// StartNode starts n's daemon.
func (f *Fleet) StartNode(n *Node) error {
	logf, err := os.OpenFile(filepath.Join(n.Dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var w io.Writer = logf
	if f.opts.Logs != nil {
		w = io.MultiWriter(logf, prefixWriter{f.opts.Logs, n.Name + " | "})
	}
	n.cmd = exec.Command(filepath.Join(f.opts.Bin, "acmehook"), "--config", n.Config, "daemon")
	n.cmd.Dir = n.Dir
	n.cmd.Stdout, n.cmd.Stderr = w, w
	n.cmd.SysProcAttr = daemonAttr()
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting node %s: %w", n.Name, err)
	}
	n.exited = make(chan struct{})
	go func() {
		n.cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
	return nil
}

// prefixWriter prefixes every write (a log line) with prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	_, err := p.w.Write(append([]byte(p.prefix), b...))
	return len(b), err
}

// Running reports whether n's daemon runs.
func (n *Node) Running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// PID is n's daemon process.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Kill kills n's daemon and its plugin with SIGKILL, as when the machine
// dies, and waits for the daemon.
func (n *Node) Kill() {
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.exited
}

// Stop stops n's daemon with SIGTERM and waits up to 10 s (it stops
// within fleet.StopTimeout, 3 s, even with etcd gone), then kills what is
// left of its process group.
func (n *Node) Stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	if n.Running() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
		}
	}
	n.Kill()
}

// Reload sends n's daemon SIGHUP.
func (n *Node) Reload() { n.cmd.Process.Signal(syscall.SIGHUP) }

// Acmehook runs acmehook with node n's configuration and returns its
// standard output.
func (f *Fleet) Acmehook(ctx context.Context, n *Node, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(f.opts.Bin, "acmehook"), append([]string{"--config", n.Config}, args...)...)
	cmd.Dir = n.Dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("acmehook %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// Issued counts the certificates with a current version in etcd.
func (f *Fleet) Issued(ctx context.Context) (int, error) {
	current, err := f.current(ctx, clientv3.WithKeysOnly())
	return len(current), err
}

// current returns each certificate's current version in etcd, by name:
// one read of every key below certificates/, with opts added
// (WithKeysOnly spares the values, the versions are then empty).
func (f *Fleet) current(ctx context.Context, opts ...clientv3.OpOption) (map[string]string, error) {
	certs := f.prefix + "certificates/"
	resp, err := f.cli.Get(ctx, certs, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, err
	}
	current := map[string]string{}
	for _, kv := range resp.Kvs {
		if name, ok := strings.CutSuffix(strings.TrimPrefix(string(kv.Key), certs), "/current"); ok && !strings.Contains(name, "/") {
			current[name] = strings.TrimPrefix(string(kv.Value), "versions/")
		}
	}
	return current, nil
}

// Deployed counts the deploys that every node recorded of its
// certificates' current versions (3 per certificate when 3 nodes have
// deployed each). It reads every key below certificates/ with its value.
func (f *Fleet) Deployed(ctx context.Context) (int, error) {
	current, err := f.current(ctx)
	if err != nil {
		return 0, err
	}
	return f.deploysOK(ctx, current)
}

// deploysOK counts the deploy records that say ok, of the versions in
// current (of any version when current is nil).
func (f *Fleet) deploysOK(ctx context.Context, current map[string]string) (int, error) {
	deploys, err := f.cli.Get(ctx, f.prefix+".deploys/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range deploys.Kvs {
		name, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), f.prefix+".deploys/"), "/")
		var rec struct{ Version, Result string }
		if json.Unmarshal(kv.Value, &rec) == nil && rec.Result == "ok" && (current == nil || rec.Version == current[name]) {
			n++
		}
	}
	return n, nil
}

// WaitIssued waits until want certificates are issued, or timeout.
func (f *Fleet) WaitIssued(ctx context.Context, want int, timeout time.Duration) error {
	return f.wait(ctx, "certificates issued", f.Issued, want, timeout)
}

// WaitDeployed waits until want deploys of current versions are recorded
// (Deployed), or timeout. It polls the deploy records alone, and reads the
// current versions (every certificate's files) only once there are want
// records that say ok.
func (f *Fleet) WaitDeployed(ctx context.Context, want int, timeout time.Duration) error {
	return f.wait(ctx, "deploys recorded", func(ctx context.Context) (int, error) {
		if n, err := f.deploysOK(ctx, nil); err != nil || n < want {
			return n, err
		}
		return f.Deployed(ctx)
	}, want, timeout)
}

// wait polls count every 200 ms until it reaches want, every daemon
// exited, or timeout.
func (f *Fleet) wait(ctx context.Context, what string, count func(context.Context) (int, error), want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := count(ctx)
		if err == nil && n >= want {
			return nil
		}
		running := 0
		for _, nd := range f.Nodes {
			if nd.Running() {
				running++
			}
		}
		if running == 0 {
			return fmt.Errorf("every daemon exited; see their logs in %s", f.opts.Dir)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d %s after %s (%v); see the daemons' logs in %s", n, want, what, timeout, err, f.opts.Dir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// session is a live session in etcd (the value of .sessions/LEASE).
type session struct {
	Node string `json:"node"`
	PID  int    `json:"pid"`
}

// Sessions returns the node names with a live session, and which one
// holds the storage lock ("" if none: the nodes split the work).
func (f *Fleet) Sessions(ctx context.Context) (live []string, storageHolder string, err error) {
	resp, err := f.cli.Get(ctx, f.prefix+".sessions/", clientv3.WithPrefix())
	if err != nil {
		return nil, "", err
	}
	byLease := map[int64]string{}
	for _, kv := range resp.Kvs {
		var s session
		if json.Unmarshal(kv.Value, &s) == nil {
			live = append(live, s.Node)
			byLease[kv.Lease] = s.Node
		}
	}
	lk, err := f.cli.Get(ctx, f.prefix+".locks/storage/.holders/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, "", err
	}
	if len(lk.Kvs) > 0 {
		storageHolder = byLease[lk.Kvs[0].Lease]
	}
	return live, storageHolder, nil
}

// Node returns the node called name.
func (f *Fleet) Node(name string) *Node {
	for _, n := range f.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitTakeover waits, after dead was killed, until its session is gone
// and, if it held the storage lock, another node holds it; it returns
// how long that took since killedAt.
func (f *Fleet) WaitTakeover(ctx context.Context, dead string, heldStorage bool, killedAt time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := killedAt.Add(timeout)
	for {
		live, holder, err := f.Sessions(ctx)
		if err == nil && !contains(live, dead) && (!heldStorage || holder != "" && holder != dead) {
			return time.Since(killedAt), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no takeover from %s within %s (live %v, storage lock %q)", dead, timeout, live, holder)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Close stops the daemons (at once, each within 10 s), then the front,
// Pebble and etcd.
func (f *Fleet) Close() {
	var wg sync.WaitGroup
	for _, n := range f.Nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
	if f.Front != nil {
		f.Front.Close()
	}
	if f.Pebble != nil {
		f.Pebble.Close()
	}
	if f.cli != nil {
		f.cli.Close()
	}
	if f.Etcd != nil {
		f.Etcd.Close()
	}
}
