package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/internal/testetcd"
)

// TestOwner: rendezvous hashing spreads names evenly over the nodes, and
// when a node comes or goes only the names it owned (or comes to own) move.
func TestOwner(t *testing.T) {
	names := make([]string, 3000)
	for i := range names {
		names[i] = fmt.Sprintf("cert%04d", i)
	}
	three := []string{"web1", "web2", "web3"}
	count := map[string]int{}
	for _, n := range names {
		count[Owner(three, n)]++
	}
	for _, node := range three {
		if c := count[node]; c < 850 || c > 1150 {
			t.Errorf("Owner over 3 nodes gives %s %d of %d names, want about a third", node, c, len(names))
		}
	}
	four := append(slices.Clone(three), "web4")
	two := three[:2]
	for _, n := range names {
		was := Owner(three, n)
		if now := Owner(four, n); now != was && now != "web4" {
			t.Fatalf("adding web4 moved %s from %s to %s", n, was, now)
		}
		if now := Owner(two, n); now != was && was != "web3" {
			t.Fatalf("removing web3 moved %s from %s to %s", n, was, now)
		}
	}
	if got := Owner(nil, "x"); got != "" {
		t.Errorf("Owner(nil) = %q, want \"\"", got)
	}
	if a, b := Owner([]string{"a", "b"}, "x"), Owner([]string{"b", "a"}, "x"); a != b {
		t.Errorf("Owner depends on the order of the nodes: %s, %s", a, b)
	}
}

// TestCoordinator: two daemons on one etcd see each other; a command's
// session does not count; a certificate's lock is taken by one node at a
// time and fences its writes; a version stored by one is announced to the
// other; a daemon that goes has its certificates owned by the other;
// deploy records are per node.
func TestCoordinator(t *testing.T) {
	ctx := t.Context()
	st1, s1, c1, c2, close2 := twoDaemons(t)
	closed2 := false
	defer func() {
		if !closed2 {
			close2()
		}
	}()
	if _, all := c1.TakeChanges(); !all {
		t.Error("n1 was not told the membership changed when n2 came")
	}

	// A command (run, issue) on a third node name does not join.
	s3 := s1
	s3.Node = "n3"
	_, co3, close3, err := OpenNode(ctx, s3, StoreOptions{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !co3.Owns("anything") {
		t.Error("a command's coordinator does not own every certificate")
	}
	time.Sleep(200 * time.Millisecond)
	if got := c1.Nodes(); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("with a command running, n1 sees nodes %v, want n1,n2", got)
	}
	close3()

	// Each name is owned by exactly one of them.
	var mine1, mine2 []string
	for i := range 40 {
		n := fmt.Sprintf("c%02d", i)
		if o1, o2 := c1.Owns(n), c2.Owns(n); o1 == o2 {
			t.Fatalf("%s: n1 owns it %v, n2 owns it %v", n, o1, o2)
		} else if o1 {
			mine1 = append(mine1, n)
		} else {
			mine2 = append(mine2, n)
		}
	}
	if len(mine1) == 0 || len(mine2) == 0 {
		t.Fatalf("n1 owns %v, n2 owns %v: want a share each", mine1, mine2)
	}

	// The lock: one holder at a time, and the claim's store writes.
	name := mine2[0]
	cl2, err := c2.Claim(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Claim(ctx, name); !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "node n2") {
		t.Errorf("n1 claiming %s held by n2: %v, want ErrLocked naming n2", name, err)
	}
	v := &store.Version{KeyPEM: keyPEM(t), CertPEM: []byte("-----BEGIN CERTIFICATE-----\n01\n"), Info: store.VersionInfo{Serial: "01", IssuedAt: time.Now()}}
	if err := cl2.Store.Commit(ctx, name, v, []byte("{}")); err != nil {
		t.Fatalf("committing under the claim: %v", err)
	}
	eventually(t, "n1 to be told of n2's new version", func() bool {
		names, _ := c1.TakeChanges()
		return slices.Contains(names, name)
	})
	cl2.Release()
	cl1, err := c1.Claim(ctx, name)
	if err != nil {
		t.Fatalf("n1 claiming %s after n2 released it: %v", name, err)
	}
	cl1.Release()

	// Deploy records are each node's own.
	rec := engine.DeployRecord{Node: "n1", Version: v.ID, Serial: "01", Result: "ok", Time: time.Now().UTC()}
	if err := c1.RecordDeploy(ctx, name, rec); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := c1.Deployed(ctx, name); err != nil || !ok || !got.OK(v.ID) {
		t.Errorf("n1's record = %+v, %v, %v; want %+v", got, ok, err, rec)
	}
	if _, ok, err := c2.Deployed(ctx, name); err != nil || ok {
		t.Errorf("n2 has a record (%v, %v) before deploying", ok, err)
	}
	all, err := Deploys(ctx, st1.Backend())
	if err != nil || len(all[name]) != 1 || all[name][0].Node != "n1" {
		t.Errorf("Deploys = %+v, %v; want n1's record of %s", all, err, name)
	}

	// n2 goes: n1 owns everything, and is told so at once.
	c1.TakeChanges()
	close2()
	closed2 = true
	gone := time.Now()
	eventually(t, "n1 to see n2 gone", func() bool { _, all := c1.TakeChanges(); return all })
	t.Logf("n1 saw n2 leave after %s", time.Since(gone).Round(time.Millisecond))
	for _, n := range mine2 {
		if !c1.Owns(n) {
			t.Errorf("with n2 gone, n1 does not own %s", n)
		}
	}
}

// twoDaemons starts an etcd and the daemon coordinators of nodes n1 and
// n2 on it, and waits until each sees both. It returns n1's store and
// storage configuration, both coordinators, and what stops n2 (n1 stops
// with the test).
func twoDaemons(t *testing.T) (st1 *store.Store, s1 config.Storage, c1, c2 *Coordinator, close2 func()) {
	t.Helper()
	c := testetcd.Start(t, testetcd.Options{})
	s1 = etcdStorage(t, c, "n1")
	s2 := s1
	s2.Node = "n2"
	st1, co1, close1, err := OpenNode(t.Context(), s1, StoreOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(close1)
	_, co2, close2, err := OpenNode(t.Context(), s2, StoreOptions{}, true)
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 = co1.(*Coordinator), co2.(*Coordinator)
	eventually(t, "both daemons to see both", func() bool {
		return slices.Equal(c1.Nodes(), []string{"n1", "n2"}) && slices.Equal(c2.Nodes(), []string{"n1", "n2"})
	})
	return st1, s1, c1, c2, close2
}

// eventually waits, up to 10 s, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestOwnWritesNotNoted: a node is not told of the versions it stored
// itself, whether the watch brings them while it still holds the
// certificate's lock or after it released it, and it is told of the next
// version another node stores. A version stored by another node is the
// barrier: each watch delivers in revision order, so once a node was told
// of a later write it has seen its own earlier one.
func TestOwnWritesNotNoted(t *testing.T) {
	ctx := t.Context()
	_, _, c1, c2, close2 := twoDaemons(t)
	defer close2()
	serial := 0
	commit := func(co *Coordinator, name string) engine.Claim {
		t.Helper()
		cl, err := co.Claim(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		s := fmt.Sprintf("%02x", serial)
		v := &store.Version{KeyPEM: keyPEM(t), CertPEM: []byte("-----BEGIN CERTIFICATE-----\n" + s + "\n"), Info: store.VersionInfo{Serial: s, IssuedAt: time.Now()}}
		if err := cl.Store.Commit(ctx, name, v, []byte("{}")); err != nil {
			t.Fatalf("%s committing %s: %v", co.Node(), name, err)
		}
		return *cl
	}
	// told waits until co was told of name, and returns every name it
	// was told of.
	told := func(co *Coordinator, name string) []string {
		t.Helper()
		var seen []string
		eventually(t, co.Node()+" to be told of "+name, func() bool {
			names, _ := co.TakeChanges()
			seen = append(seen, names...)
			return slices.Contains(seen, name)
		})
		return seen
	}
	c1.TakeChanges()
	c2.TakeChanges()
	for i, tt := range []struct {
		name         string
		releaseFirst bool // n2 releases before its watch has brought its write
	}{
		{"released at once", true},
		{"seen while held", false},
	} {
		own, barrier := fmt.Sprintf("own%d", i), fmt.Sprintf("barrier%d", i)
		cl := commit(c2, own)
		if tt.releaseFirst {
			cl.Release()
		}
		commit(c1, barrier).Release()
		if seen := told(c2, barrier); slices.Contains(seen, own) {
			t.Errorf("%s: n2 was told of its own version of %s (told of %v)", tt.name, own, seen)
		}
		if !tt.releaseFirst {
			cl.Release()
		}
		if names, _ := c2.TakeChanges(); slices.Contains(names, own) {
			t.Errorf("%s: n2 was told of its own version of %s once it released the lock", tt.name, own)
		}
		told(c1, own)
		// Another node's next version of the same certificate is news.
		commit(c1, own).Release()
		told(c2, own)
	}
}
