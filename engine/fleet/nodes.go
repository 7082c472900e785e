package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
)

// Node is a live node of a fleet, as `acmehook nodes` shows it. The JSON
// field names are documented in docs/cli.md and stable.
type Node struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// LastSeen is when the node last renewed its lease.
	LastSeen time.Time `json:"last_seen"`
	// Certificates are the certificates it owns among the live nodes
	// (Owner), of the names Nodes was given.
	Certificates []string `json:"certificates"`
	// WorkingOn are the certificates whose lock it holds now (a job in
	// progress).
	WorkingOn []string `json:"working_on"`
	// Storage says it holds the whole-storage lock (storage migrate).
	Storage bool `json:"storage_lock"`
	// Daemon says it is a daemon, a member of the fleet; a command such
	// as run or issue is listed while it runs, and owns nothing.
	Daemon bool `json:"daemon"`
}

// ErrNotFleet: the storage is not shared (not etcd).
var ErrNotFleet = errors.New("fleet: the storage is not etcd: there is one node, this one")

// EtcdBackend returns the etcd backend below b's wrappers, or ErrNotFleet.
func EtcdBackend(b store.Backend) (*etcd.Backend, error) {
	for {
		switch x := b.(type) {
		case *etcd.Backend:
			return x, nil
		case interface{ Unwrap() store.Backend }:
			b = x.Unwrap()
		default:
			return nil, ErrNotFleet
		}
	}
}

// Nodes lists the live nodes of the storage behind b, sorted by name: one
// per running process that opened it for writing, with the certificates
// among names that each owns.
func Nodes(ctx context.Context, b store.Backend, names []string) ([]Node, error) {
	eb, err := EtcdBackend(b)
	if err != nil {
		return nil, err
	}
	sessions, err := eb.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	var live []string
	for _, s := range sessions {
		if s.Daemon && !slices.Contains(live, s.Node) {
			live = append(live, s.Node)
		}
	}
	owned := map[string][]string{}
	for _, n := range names {
		o := Owner(live, n)
		owned[o] = append(owned[o], n)
	}
	out := make([]Node, 0, len(sessions))
	for _, s := range sessions {
		n := Node{Name: s.Node, Version: s.Version, PID: s.PID, Started: s.Started, LastSeen: s.LastSeen,
			Certificates: []string{}, WorkingOn: []string{}, Daemon: s.Daemon}
		if s.Daemon && !slices.ContainsFunc(out, func(o Node) bool { return o.Name == s.Node && o.Daemon }) {
			n.Certificates = append(n.Certificates, owned[s.Node]...)
		}
		for _, l := range s.Locks {
			if name, ok := strings.CutPrefix(l, "certificates/"); ok {
				n.WorkingOn = append(n.WorkingOn, name)
			} else if l == store.StorageLock {
				n.Storage = true
			}
		}
		out = append(out, n)
	}
	return out, nil
}
