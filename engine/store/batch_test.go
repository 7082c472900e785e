package store

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"
)

// durability follows, from the write points a FileBackend passes (its
// fault hook), which keys are durable: a key renamed or unlinked into its
// directory is durable once that directory is synced after it.
type durability struct {
	t       *testing.T
	pending map[string][]string // directory -> keys changed since its last sync
	durable map[string]bool
	points  []string // "point key", in order
	// before, if set, is called at each point before it is recorded.
	before func(point, key string)
}

func newDurability(t *testing.T) *durability {
	return &durability{t: t, pending: map[string][]string{}, durable: map[string]bool{}}
}

func (d *durability) fault(point, key string) error {
	if d.before != nil {
		d.before(point, key)
	}
	d.points = append(d.points, point+" "+key)
	switch point {
	case "rename", "unlink":
		dir := path.Dir(key)
		d.pending[dir] = append(d.pending[dir], key)
		delete(d.durable, key)
	case "dirsync":
		dir := path.Dir(key)
		for _, k := range d.pending[dir] {
			d.durable[k] = true
		}
		delete(d.pending, dir)
	}
	return nil
}

func (d *durability) count(point string) int {
	n := 0
	for _, p := range d.points {
		if strings.HasPrefix(p, point+" ") {
			n++
		}
	}
	return n
}

// TestApplyBatchOrder checks the order of the file backend's writes for a
// run of Batch operations: every operation before the one that ends the run
// is durable (renamed, then its directory synced) before that one is begun,
// each directory of the run is synced once, and the unmarked operations are
// each durable before the next. Without the barrier after the run, a crash
// could leave the operation that ends it without the run.
func TestApplyBatchOrder(t *testing.T) {
	ctx := context.Background()
	b, err := OpenFileBackend(t.TempDir(), FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Put(ctx, "d/gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ops := []Op{
		Batched(Put("d/a", []byte("a"))),
		Batched(Put("d/b", []byte("b"))),
		Batched(Put("e/c", []byte("c"))),
		Batched(Delete("d/gone")),
		Put("d/v", []byte("v")), // ends the run
		Put("f/current", []byte("d")),
	}
	d := newDurability(t)
	d.before = func(point, key string) {
		if point != "create" {
			return
		}
		// Every operation before key's is durable when key's begins,
		// except the operations of the run key belongs to.
		i := slices.IndexFunc(ops, func(op Op) bool { return op.Key == key })
		start := i
		for start > 0 && ops[start-1].Batch && ops[i].Batch {
			start--
		}
		for _, op := range ops[:start] {
			if !d.durable[op.Key] {
				t.Errorf("%s begun before %s %s was durable", key, op.Kind, op.Key)
			}
		}
	}
	b.fault = d.fault
	if err := b.Apply(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if !d.durable[op.Key] {
			t.Errorf("%s %s not durable when Apply returned", op.Kind, op.Key)
		}
	}
	// d and e once for the run, then d/v and f/current: 4, where one
	// sync per operation would be 6.
	if n := d.count("dirsync"); n != 4 {
		t.Errorf("%d directory syncs, want 4:\n%s", n, strings.Join(d.points, "\n"))
	}
	// Data is synced before it is renamed into place.
	for _, op := range ops {
		if op.Kind != OpPut || IsLink(op.Key) {
			continue
		}
		s, r := slices.Index(d.points, "sync "+op.Key), slices.Index(d.points, "rename "+op.Key)
		if s < 0 || r < 0 || s > r {
			t.Errorf("%s: file sync at %d, rename at %d; want the sync first", op.Key, s, r)
		}
	}
}

// TestCommitOrder checks what Commit makes durable before what: the files
// of the new version (one batch, its directory synced once), then
// version.json, then the switch of current; and that deleting a version
// removes version.json durably before the rest.
func TestCommitOrder(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{Now: clock(), Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fb := s.b.(*FileBackend)
	var id string
	d := newDurability(t)
	d.before = func(point, key string) {
		if point != "create" {
			return
		}
		dir := path.Dir(key)
		switch base := path.Base(key); {
		case base == versionFile:
			for _, f := range []string{keyFile, certFile, chainFile, fullchainFile, metaFile} {
				if !d.durable[dir+"/"+f] {
					t.Errorf("%s begun before %s was durable", key, f)
				}
			}
			id = path.Base(dir)
		case base == currentLink:
			if vj := dir + "/versions/" + id + "/" + versionFile; !d.durable[vj] {
				t.Errorf("current switched before %s was durable", vj)
			}
		}
	}
	unlinked := map[string]bool{}
	before := d.before
	d.before = func(point, key string) {
		before(point, key)
		if point != "unlink" || !strings.Contains(key, "/"+versionsDir+"/") {
			return
		}
		vj := path.Dir(key) + "/" + versionFile
		switch {
		case key == vj:
			unlinked[vj] = true
		case !unlinked[vj] || !d.durable[vj]:
			t.Errorf("%s unlinked before the removal of %s was durable", key, vj)
		}
	}
	fb.fault = d.fault
	for i, serial := range []string{"01", "02", "03"} {
		d.points = nil
		if err := s.Commit(ctx, "site", fakeVersion(serial), []byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
		// The version's directory once for its five files, once for
		// version.json, and the certificate's directory for current
		// (removing meta.json beside the versions finds nothing); the
		// third commit also prunes the first version: one sync after
		// version.json, one for three of the other files as a batch, one
		// for the last.
		want := 3
		if i == 2 {
			want += 3
		}
		if n := d.count("dirsync"); n != want {
			t.Errorf("commit %d: %d directory syncs, want %d:\n%s", i+1, n, want, strings.Join(d.points, "\n"))
		}
	}
	if n := d.count("unlink") - 1; n != 6 { // and meta.json beside the versions, missing
		t.Errorf("pruning unlinked %d files, want the 6 of the first version:\n%s", n, strings.Join(d.points, "\n"))
	}
	if len(unlinked) != 1 {
		t.Errorf("version.json unlinked in %d versions, want 1", len(unlinked))
	}
}
