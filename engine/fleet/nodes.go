package fleet

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
)

// Node is a live node of a fleet, as `acmehook nodes` shows it.
type Node struct {
	Name    string    `json:"name"`
	Version string    `json:"version,omitempty"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// LastSeen is when the node last renewed its lease.
	LastSeen time.Time `json:"last_seen"`
	// Certificates are the certificates whose lock it holds.
	Certificates []string `json:"certificates"`
	// Storage says it holds the whole-storage lock (a single node's run).
	Storage bool `json:"storage_lock,omitempty"`
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
// per running process that opened it for writing.
func Nodes(ctx context.Context, b store.Backend) ([]Node, error) {
	eb, err := EtcdBackend(b)
	if err != nil {
		return nil, err
	}
	sessions, err := eb.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Node, 0, len(sessions))
	for _, s := range sessions {
		n := Node{Name: s.Node, Version: s.Version, PID: s.PID, Started: s.Started, LastSeen: s.LastSeen, Certificates: []string{}}
		for _, l := range s.Locks {
			if name, ok := strings.CutPrefix(l, "certificates/"); ok {
				n.Certificates = append(n.Certificates, name)
			} else if l == store.StorageLock {
				n.Storage = true
			}
		}
		out = append(out, n)
	}
	return out, nil
}
