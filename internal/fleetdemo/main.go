// Command fleetdemo runs acmehook's fleet mode end to end on one machine
// with nothing but Go: a 3-member etcd and Pebble in this process, three
// acmehook daemons as processes on loopback (one [storage], three node
// names, each node's standalone plugin on its own port), and a front on
// Pebble's http-01 port that forwards each validation to a random node.
// It issues a handful of certificates, shows `acmehook list` and which
// nodes answered the CA, kills one daemon, and shows the others carry on.
// Every port is chosen at random: it can run beside anything.
//
// It is run by "make fleet-demo" from the repository root, after
// "make build".
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "`directory` holding acmehook and the standalone plugin (make build)")
	dir := flag.String("dir", "demo/fleet-run", "working `directory` (emptied first)")
	certs := flag.Int("certificates", 5, "certificates to issue")
	flag.Parse()
	// Ctrl-C, SIGTERM, a closed terminal, or the death of the parent
	// (`go run` killed) stop the fleet; should this process itself be
	// killed, its daemons die with it (daemonAttr).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if dieWithParent() {
		fmt.Fprintln(os.Stderr, "fleet-demo: the parent process is gone")
		os.Exit(1)
	}
	if err := run(ctx, Options{Bin: *bin, Dir: *dir, Nodes: 3, Members: 3, Certificates: *certs,
		LeaseTTL: 2 * time.Second, Concurrency: 4, Random: true}); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(ctx context.Context, o Options) error {
	for _, exe := range []string{"acmehook", "standalone"} {
		if _, err := os.Stat(filepath.Join(o.Bin, exe)); err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
	}
	for _, p := range []*string{&o.Bin, &o.Dir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	step("starting a %d-member etcd cluster and Pebble on loopback, %d acmehook daemons (n1..n%d), and a front that forwards each of Pebble's http-01 validations to a random node", o.Members, o.Nodes, o.Nodes)
	f, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Printf("etcd: %s\nPebble: %s (validates http-01 on 127.0.0.1:%d, the front)\n", strings.Join(f.Etcd.Endpoints, " "), f.Pebble.DirectoryURL, f.Pebble.HTTPPort)
	for _, n := range f.Nodes {
		fmt.Printf("node %s: pid %d, standalone plugin on %s, config %s, log %s\n", n.Name, n.PID(), n.HTTPAddr, n.Config, filepath.Join(n.Dir, "daemon.log"))
	}
	fmt.Println("(the same [storage] for all three; only node = differs)")

	step("waiting for the fleet to issue %d certificates", o.Certificates)
	start := time.Now()
	if err := f.WaitIssued(ctx, o.Certificates, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("issued %d certificates in %s\n", o.Certificates, time.Since(start).Round(10*time.Millisecond))
	time.Sleep(time.Second) // the last deploys
	if err := show(ctx, f, f.Nodes[0], "list"); err != nil {
		return err
	}
	if relayed := answered(f); relayed != o.Certificates*(o.Nodes-1) {
		return fmt.Errorf("the nodes presented %d challenges relayed by another node, want %d (every challenge on every node but its owner)", relayed, o.Certificates*(o.Nodes-1))
	}
	if err := show(ctx, f, f.Nodes[0], "nodes"); err != nil {
		return err
	}

	live, holder, err := f.Sessions(ctx)
	if err != nil {
		return err
	}
	victim := f.Nodes[0]
	if holder != "" {
		victim = f.Node(holder)
	}
	step("killing node %s (pid %d) and its plugin with SIGKILL, as if its machine died (live nodes: %s)", victim.Name, victim.PID(), strings.Join(live, ", "))
	killed := time.Now()
	victim.Kill()
	took, err := f.WaitTakeover(ctx, victim.Name, holder == victim.Name, killed, 30*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("%s's lease expired and the others took over %s after the kill (lease_ttl %s)\n", victim.Name, took.Round(10*time.Millisecond), o.LeaseTTL)

	name, err := f.AddCertificate()
	if err != nil {
		return err
	}
	step("adding certificate %s to every node's configuration and reloading the live daemons (SIGHUP)", name)
	for _, n := range f.Nodes {
		if n.Running() {
			n.Reload()
		}
	}
	if err := f.WaitIssued(ctx, o.Certificates+1, 2*time.Minute); err != nil {
		return err
	}
	time.Sleep(time.Second)
	var survivor *Node
	for _, n := range f.Nodes {
		if n.Running() {
			survivor = n
			break
		}
	}
	if err := show(ctx, f, survivor, "list"); err != nil {
		return err
	}
	answered(f)
	if err := show(ctx, f, survivor, "nodes"); err != nil {
		return err
	}
	step("done: the fleet carried on without %s; stopping everything (the files stay in %s)", victim.Name, o.Dir)
	return nil
}

// show prints the output of acmehook ARGS run with node n's
// configuration.
func show(ctx context.Context, f *Fleet, n *Node, args ...string) error {
	step("acmehook %s (with node %s's configuration)", strings.Join(args, " "), n.Name)
	out, err := f.Acmehook(ctx, n, args...)
	fmt.Print(out)
	return err
}

// answered prints how many validations the front sent to each node and
// how many challenges each presented for another node, and returns the
// latter's sum.
func answered(f *Fleet) (relayed int) {
	counts := f.Front.Counts()
	fmt.Println("\nhttp-01 connections (Pebble's validations and the owners' self-checks), as the front forwarded them:")
	for i, n := range f.Nodes {
		r := countLines(filepath.Join(n.Dir, "daemon.log"), "presenting a challenge relayed by its owner")
		fmt.Printf("  %s: %d connections; presented %d challenges relayed by another node\n", n.Name, counts[i], r)
		relayed += r
	}
	if fl := f.Front.Failed(); fl > 0 {
		fmt.Printf("  %d connections found no live node\n", fl)
	}
	return relayed
}

func countLines(path, substr string) int {
	fh, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer fh.Close()
	n := 0
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}
