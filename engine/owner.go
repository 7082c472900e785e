package engine

// A fleet: several acmehook nodes sharing one storage (etcd), each running
// the engine. The engine asks a Coordinator, per certificate, whether this
// node works on it now, and takes the certificate's lock before it decides
// anything; every write of that job is fenced by the lock. The other nodes
// only deploy what the owner stored, each once per version, and record it.
// engine/fleet implements the Coordinator on etcd; the engine knows nothing
// of etcd.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// Coordinator shares out the certificates of one storage among the live
// nodes of a fleet (Options.Coordinator). Its methods MUST be safe for
// concurrent use.
type Coordinator interface {
	// Node names this node, in deploy records and logs.
	Node() string
	// Owns reports whether this node is the one to order and renew the
	// certificate called name now. It MUST NOT do I/O: the answer comes
	// from the membership the coordinator keeps current.
	Owns(name string) bool
	// Owner names the node that owns name, as well as the coordinator
	// knows it ("" when no node is live), for logs.
	Owner(name string) string
	// Claim takes the lock of the certificate called name for one job,
	// without waiting. Its Store fences every write with that lock, so a
	// node that lost it (its lease expired) cannot write. When another node
	// or process holds the lock, Claim fails with an error wrapping
	// store.ErrLocked that names the holder.
	Claim(ctx context.Context, name string) (*Claim, error)
	// Changed is signalled when something changed for this node since the
	// last TakeChanges: another node stored a new version of a
	// certificate (deploy it), or the fleet's membership changed
	// (ownership may have moved).
	Changed() <-chan struct{}
	// TakeChanges returns, and forgets, the certificates whose current
	// version changed, and whether the membership changed (then every
	// certificate is to be looked at again).
	TakeChanges() (names []string, all bool)
	// Interval is how soon to look again at a certificate whose lock
	// another node holds.
	Interval() time.Duration
	// Deployed returns this node's deploy record of the certificate name,
	// and false when it has none.
	Deployed(ctx context.Context, name string) (DeployRecord, bool, error)
	// RecordDeploy stores this node's deploy record of name.
	RecordDeploy(ctx context.Context, name string, rec DeployRecord) error
}

// Claim is a held certificate lock (Coordinator.Claim).
type Claim struct {
	// Store is the storage with every write fenced by the lock.
	Store *store.Store
	// Lost is closed when the lock is no longer held (released, or the
	// node's lease expired). Writes are refused from then on.
	Lost <-chan struct{}
	// Release gives the lock up; calling it twice is harmless.
	Release func()
}

// DeployRecord is one node's deploy of a certificate version: what ran
// (the output copies and the issued or renew event to its scripts) and how
// it ended.
type DeployRecord struct {
	Node    string    `json:"node"`
	Version string    `json:"version"`
	Serial  string    `json:"serial"`
	Result  string    `json:"result"` // "ok" or "error"
	Time    time.Time `json:"time"`
	Error   string    `json:"error,omitempty"`
}

// OK reports whether the record is a successful deploy of version.
func (r DeployRecord) OK(version string) bool { return r.Version == version && r.Result == "ok" }

// claim takes the lock of cert name through the coordinator, and makes the
// job's writes go through its fenced store until release.
func (e *Engine) claim(ctx context.Context, name string) (release func(), err error) {
	c, err := e.coord.Claim(ctx, name)
	if err != nil {
		return nil, err
	}
	e.claims.Store(name, c.Store)
	return func() {
		e.claims.Delete(name)
		c.Release()
	}, nil
}

// storeFor is the store the writes of certificate name go through: the
// engine's own without a coordinator; with one, the store of the claim
// this process holds on name, or, without a claim, a store whose every
// write is refused (a node writes only what it holds the lock of).
func (e *Engine) storeFor(name string) *store.Store {
	if e.coord == nil {
		return e.store
	}
	if st, ok := e.claims.Load(name); ok {
		return st.(*store.Store)
	}
	return e.store.WithFence(unclaimed{name})
}

// unclaimed is the fence of a write to a certificate this process holds no
// lock of: no backend took it, so every backend refuses it (ErrLockLost).
type unclaimed struct{ name string }

func (u unclaimed) Name() string { return "certificates/" + u.name + " (not claimed by this node)" }
func (unclaimed) Token() uint64  { return 0 }
func (unclaimed) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
func (unclaimed) Unlock(context.Context) error { return nil }

// deployPending reports whether this node still has to deploy version v
// of name: with a coordinator, its own deploy record says; without one,
// the metadata's PendingDeploy.
func (e *Engine) deployPending(ctx context.Context, name string, v *store.Version, meta *Meta) (bool, error) {
	if e.coord == nil {
		return meta.PendingDeploy, nil
	}
	if v == nil {
		return false, nil
	}
	rec, ok, err := e.coord.Deployed(ctx, name)
	if err != nil {
		return false, fmt.Errorf("reading this node's deploy record: %w", err)
	}
	return !ok || !rec.OK(v.ID), nil
}

// recordDeploy stores this node's deploy record of version v of name.
func (e *Engine) recordDeploy(ctx context.Context, name string, v *store.Version, err error) error {
	if e.coord == nil {
		return nil
	}
	rec := DeployRecord{Node: e.coord.Node(), Version: v.ID, Serial: v.Info.Serial, Result: "ok", Time: e.now().UTC()}
	if err != nil {
		rec.Result, rec.Error = "error", store.CapText(err.Error())
	}
	if rerr := e.coord.RecordDeploy(ctx, name, rec); rerr != nil {
		return fmt.Errorf("recording the deploy of %s on node %s: %w", name, rec.Node, rerr)
	}
	return nil
}

// lockLost reports whether err is a write the fence refused: the node lost
// the certificate's lock (its lease expired) and another node may have
// taken it over.
func lockLost(err error) bool { return errors.Is(err, store.ErrLockLost) }

// prepare builds the job of cert for a run (load). In a fleet it only
// reads, and marks a certificate this node does not own (the job then only
// deploys); claimed, run just before the job executes, takes the lock.
func (e *Engine) prepare(ctx context.Context, cert *config.Certificate, opts loadOptions) *job {
	if e.coord == nil {
		return e.load(ctx, cert, opts)
	}
	j := e.load(ctx, cert, loadOptions{force: opts.force})
	if !e.coord.Owns(cert.Name) {
		j.owner = e.owner(cert.Name)
	}
	return j
}

// claimed returns the job to execute for j's certificate in a fleet, as
// ownership stands now: a certificate this node owns is claimed (its lock
// taken) and read again under the lock, so what to do is decided there and
// two nodes never both order it; one it does not own is only deployed; one
// whose lock another node or process holds is left alone (busy).
func (e *Engine) claimed(ctx context.Context, j *job, opts loadOptions) *job {
	cert := j.cert
	if !e.coord.Owns(cert.Name) {
		if j.owner == "" {
			j = e.load(ctx, cert, loadOptions{})
		}
		j.owner = e.owner(cert.Name)
		return j
	}
	release, err := e.claim(ctx, cert.Name)
	if err != nil {
		b := &job{cert: cert, log: j.log, status: Status{Name: cert.Name, Domains: cert.Domains}}
		if errors.Is(err, store.ErrLocked) {
			b.busy = err
		} else {
			b.status.Err = fmt.Errorf("taking the certificate's lock: %w", err)
		}
		return b
	}
	nj := e.load(ctx, cert, opts)
	nj.release = release
	if nj.orders() {
		// Its plugins may not have been prepared (the first look found
		// nothing to do, or another node owned it then).
		nj.status.Err = e.checkSolvers(ctx, cert)
	}
	return nj
}

// owner names the node that owns name, for a job that only deploys.
func (e *Engine) owner(name string) string {
	if o := e.coord.Owner(name); o != "" {
		return o
	}
	return "(no live node)"
}

// done ends j: the certificate's lock, if it holds one, is released.
func (j *job) done() {
	if j.release != nil {
		j.release()
	}
}

// orders reports whether j would order a certificate: due, and this
// process works on it.
func (j *job) orders() bool {
	return j.status.Err == nil && j.status.Due() && j.owner == "" && j.busy == nil
}

// deployOnly is the run of a certificate another node owns: the version
// that node stored is deployed here once (output copies, then issued or
// renew to this node's scripts) and this node's deploy recorded; nothing
// is written to the certificate's storage.
func (e *Engine) deployOnly(ctx context.Context, j *job, res Result) Result {
	st := j.status
	switch {
	case st.Err != nil:
		j.log.Error("reading the certificate", "owner", j.owner, "error", st.Err)
		res.Action, res.Err = ActionFailed, st.Err
		return res
	case j.current == nil || j.aside || !st.PendingDeploy:
		res.Reason = "node " + j.owner + " works on it"
		return res
	}
	j.log.Info("deploying the version another node stored", "version", j.current.ID, "owner", j.owner)
	return e.redeploy(ctx, j, res)
}
