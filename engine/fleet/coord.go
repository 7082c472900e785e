package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
)

// CertificateLock is the name of the lock of the certificate called name,
// which a node holds while it works on it.
func CertificateLock(name string) string { return "certificates/" + name }

// Owner returns the node among nodes that owns the certificate called
// cert: the one with the highest rendezvous (highest-random-weight) score
// of (node, cert). Every node computes the same owner from the same
// membership, and when a node comes or goes only the certificates it owns
// (or comes to own) move. "" when nodes is empty.
func Owner(nodes []string, cert string) string {
	best, bestScore := "", uint64(0)
	for _, n := range nodes {
		if s := score(n, cert); best == "" || s > bestScore || s == bestScore && n < best {
			best, bestScore = n, s
		}
	}
	return best
}

// score is the rendezvous weight of node for cert: FNV-1a of both, spread
// by the splitmix64 finaliser (FNV alone leaves the high bits of similar
// inputs close).
func score(node, cert string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(cert))
	h.Write([]byte{0})
	h.Write([]byte(node))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// CoordinatorOptions configure NewCoordinator.
type CoordinatorOptions struct {
	// Split shares the certificates out among the live nodes (the
	// daemon). Without it the node owns every certificate and only takes
	// each one's lock (a command such as run or issue, beside the fleet's
	// daemons).
	Split bool
	// Logger receives membership changes; nil discards.
	Logger *slog.Logger
}

// Coordinator is the engine.Coordinator of one node on an etcd storage.
// The membership is the set of node names of the live daemons' sessions
// (the backend's ".sessions/" keys, each on its node's lease, marked
// daemon; a command's session does not count), watched and,
// in case a watch misses something, read again every Interval. The owner
// of a certificate is Owner over that set. Claim takes the certificate's
// lock (CertificateLock) on the node's session, and fences the job's
// writes with it. Deploy records live at PREFIX.deploys/NAME/NODE.
type Coordinator struct {
	eb       *etcd.Backend
	locker   store.Backend // the backend the store writes through (sealed)
	base     *store.Store
	split    bool
	interval time.Duration
	log      *slog.Logger
	cancel   context.CancelFunc
	done     chan struct{}

	mu      sync.Mutex
	nodes   []string // live node names, sorted, distinct
	names   map[string]bool
	all     bool
	changed chan struct{}
	holds   map[string]*hold // this node's last claim of each certificate
}

// hold is this node's claim of a certificate, held or the last one it
// released, so that the watch tells the node's own writes from other
// nodes': the lock is this node's from revision from (its token) on, so
// whatever was written to the certificate after from, up to the last
// write the lock fenced (to, once released), was written by this node.
// While the claim is held, the watch keeps the revisions it sees in
// pending until the release decides.
type hold struct {
	from, to int64
	held     bool
	pending  []int64
}

// ours reports whether a write at revision rev was this node's under h.
func (h *hold) ours(rev int64) bool { return h != nil && !h.held && h.from < rev && rev <= h.to }

var _ engine.Coordinator = (*Coordinator)(nil)

// NewCoordinator starts the coordination of this node on the etcd storage
// below b (store.Backend wrappers such as sealed are looked through), for
// the engine's store base over b. Close stops it.
func NewCoordinator(ctx context.Context, b store.Backend, base *store.Store, opts CoordinatorOptions) (*Coordinator, error) {
	eb, err := EtcdBackend(b)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Coordinator{
		eb: eb, locker: b, base: base, split: opts.Split,
		interval: CheckInterval(eb.LeaseTTL()),
		log:      log.With("node", eb.Node()),
		done:     make(chan struct{}),
		names:    map[string]bool{},
		changed:  make(chan struct{}, 1),
		holds:    map[string]*hold{},
	}
	if _, err := eb.Session(ctx); err != nil {
		return nil, err
	}
	rev, err := c.refresh(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	go c.watch(wctx, rev)
	return c, nil
}

// CheckInterval is how often a node of lease TTL ttl reads the membership
// again (besides watching it), renews an expired session, and looks again
// at a certificate whose lock another node held: a third of the TTL. A
// dead node's certificates are taken over within ttl + CheckInterval(ttl).
func CheckInterval(ttl time.Duration) time.Duration { return ttl / 3 }

// Close stops watching. It does not close the backend.
func (c *Coordinator) Close() {
	c.cancel()
	<-c.done
}

// Node names this node.
func (c *Coordinator) Node() string { return c.eb.Node() }

// Interval is CheckInterval of the node's lease TTL.
func (c *Coordinator) Interval() time.Duration { return c.interval }

// Nodes returns the live nodes' names as last seen, sorted.
func (c *Coordinator) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Owns reports whether this node owns name among the live nodes (always,
// without Split). A node whose own session expired owns nothing until it
// has a new one.
func (c *Coordinator) Owns(name string) bool {
	return !c.split || c.Owner(name) == c.eb.Node()
}

// Owner names the live node that owns name.
func (c *Coordinator) Owner(name string) string {
	if !c.split {
		return c.eb.Node()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return Owner(c.nodes, name)
}

// Claim takes the lock of certificate name for one job.
func (c *Coordinator) Claim(ctx context.Context, name string) (*engine.Claim, error) {
	l, err := c.locker.Lock(ctx, CertificateLock(name))
	if err != nil {
		return nil, err
	}
	var held func(context.Context) error
	if h, ok := l.(interface{ Held(context.Context) error }); ok {
		held = h.Held
	}
	h := &hold{from: int64(l.Token()), held: true}
	c.mu.Lock()
	c.holds[name] = h
	c.mu.Unlock()
	var once sync.Once
	return &engine.Claim{
		Lock:  CertificateLock(name),
		Store: c.base.WithFence(l),
		Lost:  l.Done(),
		Held:  held,
		Release: func() {
			if err := l.Unlock(context.Background()); err != nil {
				c.log.Warn("releasing a certificate's lock; its lease frees it", "cert", name, "error", err)
			}
			once.Do(func() { c.released(name, h, l) })
		},
	}, nil
}

// released ends this node's hold h of certificate name under lock l: the
// versions the watch saw stored meanwhile that this node did not write
// are noted as changes.
func (c *Coordinator) released(name string, h *hold, l store.Lock) {
	var last int64
	if lw, ok := l.(interface{ LastWrite() int64 }); ok {
		last = lw.LastWrite()
	}
	c.mu.Lock()
	h.to, h.held = last, false
	pending := h.pending
	h.pending = nil
	c.mu.Unlock()
	for _, rev := range pending {
		if !h.ours(rev) {
			c.note(name)
			return
		}
	}
}

// seen notes that another node stored a version of certificate name (its
// current pointer written at revision rev), unless this node wrote it.
func (c *Coordinator) seen(name string, rev int64) {
	c.mu.Lock()
	h := c.holds[name]
	switch {
	case h != nil && h.held:
		h.pending = append(h.pending, rev)
		c.mu.Unlock()
		return
	case h.ours(rev):
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.note(name)
}

// Changed is signalled when TakeChanges has something.
func (c *Coordinator) Changed() <-chan struct{} { return c.changed }

// TakeChanges returns and forgets what changed since the last call.
func (c *Coordinator) TakeChanges() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.names))
	for n := range c.names {
		names = append(names, n)
	}
	clear(c.names)
	all := c.all
	c.all = false
	return names, all
}

// note records a change (a certificate name, or "" for the membership) and
// signals it.
func (c *Coordinator) note(name string) {
	c.mu.Lock()
	if name == "" {
		c.all = true
	} else {
		c.names[name] = true
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// refresh reads the membership and returns the revision it read at. A
// change is logged and noted.
func (c *Coordinator) refresh(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, etcd.DefaultRequestTimeout)
	defer cancel()
	resp, err := c.eb.Client().Get(rctx, c.eb.Prefix()+".sessions/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: reading the fleet's sessions: %w", err)
	}
	var nodes []string
	for _, kv := range resp.Kvs {
		var info etcd.SessionInfo
		if json.Unmarshal(kv.Value, &info) == nil && info.Daemon && info.Node != "" && !slices.Contains(nodes, info.Node) {
			nodes = append(nodes, info.Node)
		}
	}
	slices.Sort(nodes)
	c.mu.Lock()
	moved := !slices.Equal(nodes, c.nodes)
	old := c.nodes
	c.nodes = nodes
	c.mu.Unlock()
	if moved {
		if old != nil {
			c.log.Info("fleet membership changed", "nodes", strings.Join(nodes, ","), "was", strings.Join(old, ","))
		}
		c.note("")
	}
	return resp.Header.Revision, nil
}

// watch follows the sessions (membership) and the certificates' current
// pointers from revision rev on, reads the membership again every
// interval, and renews this node's session when it expired.
func (c *Coordinator) watch(ctx context.Context, rev int64) {
	defer close(c.done)
	cli, prefix := c.eb.Client(), c.eb.Prefix()
	sessions, certs := prefix+".sessions/", prefix+"certificates/"
	var sessCh, certCh clientv3.WatchChan
	var wcancel context.CancelFunc = func() {}
	open := func(from int64) {
		wcancel()
		var wctx context.Context
		wctx, wcancel = context.WithCancel(clientv3.WithRequireLeader(ctx))
		sessCh = cli.Watch(wctx, sessions, clientv3.WithPrefix(), clientv3.WithRev(from+1))
		certCh = cli.Watch(wctx, certs, clientv3.WithPrefix(), clientv3.WithRev(from+1), clientv3.WithFilterDelete(), clientv3.WithKeysOnly())
	}
	defer func() { wcancel() }()
	open(rev)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	// restart reads everything again after a watch ended (no leader,
	// compacted) and watches from there.
	restart := func(err error) {
		if err != nil {
			c.log.Warn("etcd watch ended; reading the fleet's state again", "error", err)
		}
		for ctx.Err() == nil {
			r, err := c.refresh(ctx)
			if err == nil {
				c.note("")
				open(r)
				return
			}
			c.log.Warn("reading the fleet's membership", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(c.interval):
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := c.eb.Session(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("renewing this node's etcd session", "error", err)
			}
			if _, err := c.refresh(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("reading the fleet's membership", "error", err)
			}
		case resp, ok := <-sessCh:
			if ctx.Err() != nil {
				return
			}
			if !ok || resp.Err() != nil {
				restart(resp.Err())
				continue
			}
			if _, err := c.refresh(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("reading the fleet's membership", "error", err)
			}
		case resp, ok := <-certCh:
			if ctx.Err() != nil {
				return
			}
			if !ok || resp.Err() != nil {
				restart(resp.Err())
				continue
			}
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if name, ok := strings.CutSuffix(strings.TrimPrefix(k, certs), "/current"); ok && !strings.Contains(name, "/") {
					c.seen(name, ev.Kv.ModRevision)
				}
			}
		}
	}
}

// deployKey is the etcd key of node's deploy record of name.
func deployKey(prefix, name, node string) string {
	return prefix + ".deploys/" + name + "/" + node
}

// Deployed returns this node's deploy record of name.
func (c *Coordinator) Deployed(ctx context.Context, name string) (engine.DeployRecord, bool, error) {
	rctx, cancel := context.WithTimeout(ctx, etcd.DefaultRequestTimeout)
	defer cancel()
	resp, err := c.eb.Client().Get(rctx, deployKey(c.eb.Prefix(), name, c.eb.Node()))
	if err != nil {
		return engine.DeployRecord{}, false, fmt.Errorf("etcd: reading a deploy record: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return engine.DeployRecord{}, false, nil
	}
	var rec engine.DeployRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return engine.DeployRecord{}, false, fmt.Errorf("decoding the deploy record of %s: %w", name, err)
	}
	return rec, true, nil
}

// RecordDeploy stores this node's deploy record of name. Only this node
// writes its record, so it is not fenced.
func (c *Coordinator) RecordDeploy(ctx context.Context, name string, rec engine.DeployRecord) error {
	if !store.ValidName(name) {
		return fmt.Errorf("%w: %q", store.ErrInvalidName, name)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, etcd.DefaultRequestTimeout)
	defer cancel()
	if _, err := c.eb.Client().Put(rctx, deployKey(c.eb.Prefix(), name, c.eb.Node()), string(b)); err != nil {
		return fmt.Errorf("etcd: writing a deploy record: %w", err)
	}
	return nil
}

// Deploys returns every node's deploy records of the storage behind b, by
// certificate name, each list sorted by node. It reads only.
func Deploys(ctx context.Context, b store.Backend) (map[string][]engine.DeployRecord, error) {
	eb, err := EtcdBackend(b)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, etcd.DefaultRequestTimeout)
	defer cancel()
	p := eb.Prefix() + ".deploys/"
	resp, err := eb.Client().Get(rctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the deploy records: %w", err)
	}
	out := map[string][]engine.DeployRecord{}
	var errs []error
	for _, kv := range resp.Kvs {
		name, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), p), "/")
		var rec engine.DeployRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			errs = append(errs, fmt.Errorf("decoding deploy record %s: %w", kv.Key, err))
			continue
		}
		out[name] = append(out[name], rec)
	}
	return out, errors.Join(errs...)
}
