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
	// Lock names the lock, for logs.
	Lock string
	// Store is the storage with every write fenced by the lock.
	Store *store.Store
	// Lost is closed when the lock is no longer held (released, or the
	// node's lease expired). Writes are refused from then on, and the
	// engine cancels the job working under the lock.
	Lost <-chan struct{}
	// Held asks the storage whether the lock is still held, and returns
	// an error wrapping store.ErrLockLost when it is not. The engine asks
	// right before it has the CA finalize an order, so a node that was
	// paused past its lease does not finalize (and waste) an order whose
	// certificate it could not store; Lost may be closed only later.
	Held func(ctx context.Context) error
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
func (e *Engine) claim(ctx context.Context, name string) (c *Claim, release func(), err error) {
	c, err = e.coord.Claim(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	e.claims.Store(name, c.Store)
	return c, func() {
		e.claims.Delete(name)
		c.Release()
	}, nil
}

// whileHeld returns the context j runs under: ctx, cancelled (its cause
// wrapping store.ErrLockLost) if the lock j holds is lost meanwhile, so a
// node whose lease expired (it was paused or cut off) makes no further
// request to the CA for a certificate another node has taken over. stop
// ends the watch; call it before releasing the lock.
func (e *Engine) whileHeld(ctx context.Context, j *job) (jctx context.Context, stop func()) {
	if j.claim == nil {
		return ctx, func() {}
	}
	jctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-j.claim.Lost:
			cancel(j.lockLost(fmt.Errorf("lock %s is no longer this node's: %w", j.claim.Lock, store.ErrLockLost)))
		case <-jctx.Done():
		}
	}()
	return jctx, func() {
		cancel(nil)
		<-done
	}
}

// stillHeld asks the storage whether j still holds its certificate's lock
// (nil without a claim), right before a request to the CA that only makes
// sense under it (finalize).
func (e *Engine) stillHeld(ctx context.Context, j *job) error {
	if j.claim == nil || j.claim.Held == nil {
		return nil
	}
	if err := j.claim.Held(ctx); err != nil {
		if lockLost(err) {
			return j.lockLost(err)
		}
		return fmt.Errorf("checking the certificate's lock: %w", err)
	}
	return nil
}

// lockLost logs, once per job, that j's lock was lost and the job stops,
// and returns err.
func (j *job) lockLost(err error) error {
	j.lostOnce.Do(func() {
		lock := ""
		if j.claim != nil {
			lock = j.claim.Lock
		}
		j.log.Warn("this node lost the certificate's lock: stopping its job before any further request to the CA; the node that took it over carries on", "lock", lock, "error", err)
	})
	return err
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
	defer e.status.forget(name) // the deploy pending it reports
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
	c, release, err := e.claim(ctx, cert.Name)
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
	nj.claim, nj.release = c, release
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
