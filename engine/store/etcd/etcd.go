// Package etcd is the etcd storage backend: a store.Backend on an etcd
// cluster, for a fleet of acmehook nodes sharing one storage.
//
// A key k is stored at Prefix+k. A lock is a concurrency.Mutex on the
// backend's session, a lease of Config.LeaseTTL kept alive while the process
// runs: a node that stops (killed, paused, partitioned) loses its locks when
// the lease expires. The fencing token of a lock is the revision at which it
// was taken. Apply is one etcd transaction guarded by the mutex's IsOwner
// compare, so a node that lost its lock cannot write: its Apply fails with
// store.ErrLockLost, is logged, and is never retried.
//
// Names starting with "." below the prefix belong to the backend and the
// fleet (store keys cannot start with "."): ".locks/" holds the mutexes,
// ".sessions/" one key per live session naming its node.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/acmehook/acmehook/engine/store"
)

// Defaults of Config.
const (
	DefaultPrefix         = "/acmehook/"
	DefaultLeaseTTL       = 15 * time.Second
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	// ReleaseTimeout bounds the requests a process makes only to give
	// up what it holds when it stops: revoking its lease (CloseSession),
	// which deletes its session's keys and locks at once. When etcd does
	// not answer within it (the cluster is gone), the lease expires by
	// itself after its TTL: nothing waits for that.
	ReleaseTimeout = 2 * time.Second
)

// CloseSession ends s: its keep-alive stops and its lease is revoked
// within ReleaseTimeout (concurrency.Session.Close would wait up to the
// lease's TTL for a cluster that does not answer).
func CloseSession(s *concurrency.Session) error {
	s.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), ReleaseTimeout)
	defer cancel()
	if _, err := s.Client().Revoke(ctx, s.Lease()); err != nil {
		return fmt.Errorf("etcd: revoking lease %x (it expires by itself): %w", int64(s.Lease()), err)
	}
	return nil
}

// Config says how to reach the cluster and how to name this node.
type Config struct {
	// Endpoints are the cluster's client URLs ("https://10.0.0.1:2379").
	Endpoints []string
	// CAFile verifies the servers' certificates; CertFile and KeyFile
	// are the client certificate. All optional; any of them turns TLS on.
	CAFile, CertFile, KeyFile string
	// Username and Password log in to etcd's authentication, if set.
	Username, Password string
	// Prefix is prepended to every key; it ends in "/". Empty means
	// DefaultPrefix.
	Prefix string
	// LeaseTTL is the lifetime of this node's session lease: how long
	// its locks survive the node's silence. 0 means DefaultLeaseTTL;
	// etcd rounds it up to whole seconds.
	LeaseTTL time.Duration
	// Node names this node in lock holders and the fleet; empty means
	// the hostname.
	Node string
	// Version is the node's acmehook version, shown in its session.
	Version string
	// Daemon marks the session as a daemon's: a member of the fleet that
	// certificates are shared out among (a command's session is not).
	Daemon bool
	// ReadOnly opens without a session: no locks, no writes (they fail
	// with store.ErrReadOnly), nothing registered.
	ReadOnly bool
	// DialTimeout bounds connecting (0: DefaultDialTimeout);
	// RequestTimeout bounds every request (0: DefaultRequestTimeout).
	DialTimeout, RequestTimeout time.Duration
	// Logger receives refused writes and lost sessions; nil discards.
	Logger *slog.Logger
}

// Backend is a store.Backend on etcd. It is safe for concurrent use.
type Backend struct {
	cli    *clientv3.Client
	cfg    Config
	log    *slog.Logger
	closed atomic.Bool
	abort  context.CancelFunc // ends every request (Abort)

	mu    sync.Mutex
	sess  *concurrency.Session
	locks map[string]*lock // held through this Backend, by name
}

var _ store.Backend = (*Backend)(nil)

// Open connects to the cluster and, unless cfg.ReadOnly, starts the
// node's session. It fails when no endpoint answers within the dial
// timeout or the credentials are refused.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("etcd: prefix %q does not end in /", cfg.Prefix)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("etcd: naming the node: %w", err)
		}
		cfg.Node = h
	}
	cc := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
	}
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: loading client TLS files: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd: connecting to %s: %w", strings.Join(cfg.Endpoints, ", "), err)
	}
	actx, abort := context.WithCancel(context.Background())
	cli.KV, cli.Lease = abortableKV{cli.KV, actx}, abortableLease{cli.Lease, actx}
	b := &Backend{cli: cli, cfg: cfg, log: cfg.Logger, locks: map[string]*lock{}, abort: abort}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.log = b.log.With("node", cfg.Node)
	rctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(rctx, cfg.Prefix+".sessions/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd: reaching %s: %w", strings.Join(cfg.Endpoints, ", "), err)
	}
	if !cfg.ReadOnly {
		if _, err := b.session(ctx); err != nil {
			cli.Close()
			return nil, err
		}
	}
	return b, nil
}

// Client returns the etcd client, for the fleet's coordination.
func (b *Backend) Client() *clientv3.Client { return b.cli }

// Prefix returns the key prefix (ending in "/").
func (b *Backend) Prefix() string { return b.cfg.Prefix }

// Node returns this node's name.
func (b *Backend) Node() string { return b.cfg.Node }

// LeaseTTL returns the session lease's lifetime.
func (b *Backend) LeaseTTL() time.Duration { return b.cfg.LeaseTTL }

// SessionInfo is the value of a session's key under ".sessions/".
type SessionInfo struct {
	Node    string `json:"node"`
	PID     int    `json:"pid"`
	Version string `json:"version,omitempty"`
	// Daemon: the session is a daemon's, a member of the fleet.
	Daemon  bool      `json:"daemon,omitempty"`
	Started time.Time `json:"started"`
}

// Session returns the node's current session, starting a new one if the
// last expired (its locks are lost then; new ones are taken on the new
// session).
func (b *Backend) Session(ctx context.Context) (*concurrency.Session, error) {
	if err := b.writable(); err != nil {
		return nil, err
	}
	return b.session(ctx)
}

func (b *Backend) session(ctx context.Context) (*concurrency.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sess != nil {
		select {
		case <-b.sess.Done():
			b.log.Warn("etcd session expired; its locks are lost", "lease", fmt.Sprintf("%x", int64(b.sess.Lease())))
			b.sess = nil
		default:
			return b.sess, nil
		}
	}
	ttl := int((b.cfg.LeaseTTL + time.Second - 1) / time.Second)
	rctx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	defer cancel()
	// The lease is granted with rctx; the session's keep-alive lives
	// until Close (the client's context).
	lease, err := b.cli.Grant(rctx, int64(ttl))
	if err != nil {
		return nil, fmt.Errorf("etcd: granting a %ds lease: %w", ttl, err)
	}
	s, err := concurrency.NewSession(b.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(ttl))
	if err != nil {
		return nil, fmt.Errorf("etcd: starting a session: %w", err)
	}
	info, _ := json.Marshal(SessionInfo{Node: b.cfg.Node, PID: os.Getpid(), Version: b.cfg.Version, Daemon: b.cfg.Daemon, Started: time.Now().UTC()})
	if _, err := b.cli.Put(rctx, b.sessionKey(s.Lease()), string(info), clientv3.WithLease(s.Lease())); err != nil {
		s.Close()
		return nil, fmt.Errorf("etcd: registering the session: %w", err)
	}
	b.sess = s
	return s, nil
}

func (b *Backend) sessionKey(id clientv3.LeaseID) string {
	return b.cfg.Prefix + ".sessions/" + strconv.FormatInt(int64(id), 16)
}

func (b *Backend) key(k string) (string, error) {
	if !store.ValidKey(k) {
		return "", fmt.Errorf("%w: %q", store.ErrInvalidKey, k)
	}
	return b.cfg.Prefix + k, nil
}

func (b *Backend) usable() error {
	if b.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

func (b *Backend) writable() error {
	if err := b.usable(); err != nil {
		return err
	}
	if b.cfg.ReadOnly {
		return store.ErrReadOnly
	}
	return nil
}

func (b *Backend) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.RequestTimeout)
}

// Get returns the value under key.
func (b *Backend) Get(ctx context.Context, key string) ([]byte, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	k, err := b.key(key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	resp, err := b.cli.Get(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("etcd: getting %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", key, store.ErrNotFound)
	}
	v := resp.Kvs[0].Value
	if err := checkSize(key, v); err != nil {
		return nil, err
	}
	return v, nil
}

func checkSize(key string, v []byte) error {
	if len(v) > store.MaxValueSize {
		return fmt.Errorf("%w: %s: %d bytes, more than %d", store.ErrTooLarge, key, len(v), store.MaxValueSize)
	}
	return nil
}

// tooLarge makes etcd's refusal of a request over its size limit (the sum
// of a transaction's values) a store.ErrTooLarge.
func tooLarge(err error) error {
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return fmt.Errorf("%w: %w", store.ErrTooLarge, err)
	}
	return err
}

// Put stores value under key (not fenced).
func (b *Backend) Put(ctx context.Context, key string, value []byte) error {
	if err := b.writable(); err != nil {
		return err
	}
	k, err := b.key(key)
	if err != nil {
		return err
	}
	if err := checkSize(key, value); err != nil {
		return err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	if _, err := b.cli.Put(ctx, k, string(value)); err != nil {
		return fmt.Errorf("etcd: putting %s: %w", key, tooLarge(err))
	}
	return nil
}

// Delete removes key, and only key.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.writable(); err != nil {
		return err
	}
	k, err := b.key(key)
	if err != nil {
		return err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	if _, err := b.cli.Delete(ctx, k); err != nil {
		return fmt.Errorf("etcd: deleting %s: %w", key, err)
	}
	return nil
}

// Stat returns the size of the value under key. etcd keeps no modification
// time, so Modified is zero.
func (b *Backend) Stat(ctx context.Context, key string) (store.KeyInfo, error) {
	v, err := b.Get(ctx, key)
	if err != nil {
		return store.KeyInfo{}, err
	}
	return store.KeyInfo{Key: key, Size: int64(len(v))}, nil
}

// listPage is how many keys List reads per request.
const listPage = 256

// List returns the entries directly below prefix. It reads keys only, and
// skips each subtree once it has seen its first key, so listing
// "certificates/" costs a request per few certificates, not a read of every
// version's files.
func (b *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	if prefix != "" && (!strings.HasSuffix(prefix, "/") || !store.ValidKey(strings.TrimSuffix(prefix, "/"))) {
		return nil, fmt.Errorf("%w: list prefix %q", store.ErrInvalidKey, prefix)
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	full := b.cfg.Prefix + prefix
	end := clientv3.GetPrefixRangeEnd(full)
	var out []string
	for start := full; ; {
		resp, err := b.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(listPage))
		if err != nil {
			return nil, fmt.Errorf("etcd: listing %s: %w", prefix, err)
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if k < start {
				continue // below a child already listed
			}
			rest := k[len(full):]
			child, below := rest, false
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				child, below = rest[:i], true
			}
			// Names starting with "." are the backend's own.
			if below {
				if !strings.HasPrefix(child, ".") {
					out = append(out, child+"/")
				}
				// Every key below child/ sorts before child+"0".
				start = full + child + "0"
			} else {
				if !strings.HasPrefix(child, ".") {
					out = append(out, child)
				}
				start = k + "\x00"
			}
		}
		if !resp.More {
			break
		}
	}
	sort.Strings(out)
	return out, nil
}

// lock is a held store.Lock: a concurrency.Mutex on the session it was
// taken in.
type lock struct {
	b        *Backend
	name     string
	mu       *concurrency.Mutex
	sess     *concurrency.Session
	token    uint64
	done     chan struct{}
	unlocked chan struct{}
	once     sync.Once
	// lastWrite is the revision of the last transaction the lock fenced
	// (LastWrite).
	lastWrite atomic.Int64
}

// Held asks etcd whether the lock is still held: its key is there, taken
// at the lock's token. An error wrapping store.ErrLockLost says it is not
// (its session's lease expired, while this process may not have noticed
// yet: a paused process learns it only after it resumes).
func (l *lock) Held(ctx context.Context) error {
	select {
	case <-l.done:
		return fmt.Errorf("lock %s (token %d) is no longer held: %w", l.name, l.token, store.ErrLockLost)
	default:
	}
	rctx, cancel := l.b.ctx(ctx)
	defer cancel()
	resp, err := l.b.cli.Get(rctx, l.mu.Key(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("etcd: reading lock %s: %w", l.name, err)
	}
	if len(resp.Kvs) == 0 || uint64(resp.Kvs[0].CreateRevision) != l.token {
		return fmt.Errorf("lock %s (token %d) is no longer held: its lease expired: %w", l.name, l.token, store.ErrLockLost)
	}
	return nil
}

// LastWrite returns the etcd revision of the last write the lock fenced
// that etcd applied, 0 before the first. Every key that write put or
// deleted has that revision as its ModRevision (as a watch reports it).
func (l *lock) LastWrite() int64 { return l.lastWrite.Load() }

func (l *lock) Name() string          { return l.name }
func (l *lock) Token() uint64         { return l.token }
func (l *lock) Done() <-chan struct{} { return l.done }

// Unlock releases the lock: deletes the mutex key, unless the session is
// already gone (then the lease took it).
func (l *lock) Unlock(ctx context.Context) error {
	first := false
	l.once.Do(func() { first = true; close(l.unlocked) })
	if !first {
		return nil
	}
	<-l.done
	select {
	case <-l.sess.Done():
		l.forget()
		return nil
	default:
	}
	rctx, cancel := l.b.ctx(ctx)
	defer cancel()
	if err := l.mu.Unlock(rctx); err != nil {
		// Until its key is gone the lock stays this process's: a new
		// Lock of the name on the same session would take the same key,
		// which the retry would then delete.
		go l.releaseLater()
		return fmt.Errorf("etcd: releasing lock %s (tried again in the background): %w", l.name, err)
	}
	l.forget()
	return nil
}

// forget drops l from the locks this process holds.
func (l *lock) forget() {
	l.b.mu.Lock()
	if l.b.locks[l.name] == l {
		delete(l.b.locks, l.name)
	}
	l.b.mu.Unlock()
}

// Releasing a lock whose first delete failed.
const (
	// ReleaseRetries is how many times releaseLater tries, ReleaseRetry
	// apart.
	ReleaseRetries = 10
	ReleaseRetry   = time.Second
)

// releaseLater deletes the lock's key after Unlock failed to (a request
// that timed out), so the lock does not stay held as long as the session
// lives (the node's whole life: another node that comes to own the
// certificate would find it busy until then). It tries ReleaseRetries
// times, ReleaseRetry apart, each bounded by the request timeout, and
// stops early when the session or the backend ends (the lease takes the
// key then, or already did). Until it ends, the process holds the lock.
func (l *lock) releaseLater() {
	defer l.forget()
	for range ReleaseRetries {
		select {
		case <-l.sess.Done():
			return
		case <-time.After(ReleaseRetry):
		}
		if l.b.closed.Load() {
			return
		}
		ctx, cancel := l.b.ctx(context.Background())
		err := l.mu.Unlock(ctx)
		cancel()
		if err == nil {
			l.b.log.Info("released a lock after a failed first attempt", "lock", l.name)
			return
		}
		l.b.log.Debug("releasing a lock again", "lock", l.name, "error", err)
	}
	l.b.log.Warn("could not release a lock; it is held until this node's session ends", "lock", l.name, "tries", ReleaseRetries)
}

func (b *Backend) lockPrefix(name string) string {
	// The mutex's keys are <prefix>.locks/<name>/.holders/<lease>: a lock
	// "a/b" is not below lock "a"'s holders.
	return b.cfg.Prefix + ".locks/" + name + "/.holders/"
}

// Lock takes the lock called name without waiting, on the node's session.
func (b *Backend) Lock(ctx context.Context, name string) (store.Lock, error) {
	if err := b.writable(); err != nil {
		return nil, err
	}
	if !store.ValidKey(name) {
		return nil, fmt.Errorf("%w: lock name %q", store.ErrInvalidKey, name)
	}
	b.mu.Lock()
	_, held := b.locks[name]
	b.mu.Unlock()
	if held {
		// The mutex would let the same session in again. (Or its
		// release failed and is being tried again: releaseLater.)
		return nil, fmt.Errorf("lock %s is held by this process (node %s): %w", name, b.cfg.Node, store.ErrLocked)
	}
	sess, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	// NewMutex adds the "/" before the holders' keys itself.
	m := concurrency.NewMutex(sess, strings.TrimSuffix(b.lockPrefix(name), "/"))
	rctx, cancel := b.ctx(ctx)
	defer cancel()
	if err := m.TryLock(rctx); err != nil {
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, fmt.Errorf("lock %s is held by %s: %w", name, b.holder(rctx, name), store.ErrLocked)
		}
		return nil, fmt.Errorf("etcd: taking lock %s: %w", name, err)
	}
	l := &lock{b: b, name: name, mu: m, sess: sess, token: uint64(m.Header().Revision),
		done: make(chan struct{}), unlocked: make(chan struct{})}
	b.mu.Lock()
	if _, held := b.locks[name]; held {
		// Another goroutine of this process took it meanwhile (on the
		// same mutex key): the lock is theirs.
		b.mu.Unlock()
		return nil, fmt.Errorf("lock %s is held by this process (node %s): %w", name, b.cfg.Node, store.ErrLocked)
	}
	b.locks[name] = l
	b.mu.Unlock()
	go func() {
		select {
		case <-sess.Done():
			select {
			case <-l.unlocked:
			default:
				b.log.Info("lock lost: the session's lease expired", "lock", name, "token", l.token)
			}
			b.mu.Lock()
			if b.locks[name] == l {
				delete(b.locks, name)
			}
			b.mu.Unlock()
		case <-l.unlocked:
		}
		close(l.done)
	}()
	return l, nil
}

// holder names the node holding lock name, as well as it can be told.
func (b *Backend) holder(ctx context.Context, name string) string {
	resp, err := b.cli.Get(ctx, b.lockPrefix(name), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return "another node"
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	sr, err := b.cli.Get(ctx, b.sessionKey(lease))
	if err != nil || len(sr.Kvs) == 0 {
		return fmt.Sprintf("the session of lease %x", int64(lease))
	}
	var info SessionInfo
	if json.Unmarshal(sr.Kvs[0].Value, &info) != nil || info.Node == "" {
		return fmt.Sprintf("the session of lease %x", int64(lease))
	}
	return fmt.Sprintf("node %s (pid %d)", info.Node, info.PID)
}

// Apply performs ops as one transaction, guarded by lock's ownership and
// by the absence of every OpCreate key.
func (b *Backend) Apply(ctx context.Context, lk store.Lock, ops []store.Op) error {
	if err := b.writable(); err != nil {
		return err
	}
	var l *lock
	if lk != nil {
		var ok bool
		if l, ok = lk.(*lock); !ok || l.b != b {
			return fmt.Errorf("lock %s was not taken through this backend: %w", lk.Name(), store.ErrLockLost)
		}
		// Even a lock known to be lost is left to the transaction to
		// refuse: the fence is etcd's compare, not this process's view.
	}
	var cmps []clientv3.Cmp
	var creates []string
	if l != nil {
		cmps = append(cmps, l.mu.IsOwner())
	}
	// etcd refuses two operations on one key in a transaction; all of
	// them apply at once, so only the last one of each key matters (a
	// create's precondition is still checked).
	last := map[string]int{}
	for i, op := range ops {
		k, err := b.key(op.Key)
		if err != nil {
			return err
		}
		if err := checkSize(op.Key, op.Value); err != nil {
			return err
		}
		switch op.Kind {
		case store.OpPut, store.OpDelete:
		case store.OpCreate:
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			creates = append(creates, k)
		default:
			return fmt.Errorf("etcd: applying %s to %s: unknown operation", op.Kind, op.Key)
		}
		last[k] = i
	}
	var then []clientv3.Op
	for i, op := range ops {
		k := b.cfg.Prefix + op.Key
		if last[k] != i {
			continue
		}
		if op.Kind == store.OpDelete {
			then = append(then, clientv3.OpDelete(k))
		} else {
			then = append(then, clientv3.OpPut(k, string(op.Value)))
		}
	}
	// On failure, say which compare failed.
	var els []clientv3.Op
	if l != nil {
		els = append(els, clientv3.OpGet(l.mu.Key(), clientv3.WithKeysOnly()))
	}
	rctx, cancel := b.ctx(ctx)
	defer cancel()
	resp, err := b.cli.Txn(rctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return fmt.Errorf("etcd: applying %d operations: %w", len(ops), tooLarge(err))
	}
	if resp.Succeeded {
		if l != nil {
			l.lastWrite.Store(resp.Header.Revision)
		}
		return nil
	}
	if l != nil {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || uint64(kvs[0].CreateRevision) != l.token {
			return b.refused(l)
		}
	}
	return fmt.Errorf("creating %s: %w", strings.Join(trimAll(creates, b.cfg.Prefix), ", "), store.ErrExists)
}

func trimAll(keys []string, prefix string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, prefix)
	}
	return out
}

// refused logs and returns a write refused by the fence.
func (b *Backend) refused(l *lock) error {
	b.log.Error("write refused: lock lost (the transaction's ownership compare failed)", "lock", l.name, "token", l.token)
	return fmt.Errorf("writing under lock %s (token %d): %w", l.name, l.token, store.ErrLockLost)
}

// Close releases the node's locks (revoking its session's lease) and closes
// the client.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.mu.Lock()
	s := b.sess
	b.sess = nil
	b.mu.Unlock()
	var err error
	if s != nil {
		err = CloseSession(s)
	}
	if cerr := b.cli.Close(); err == nil {
		err = cerr
	}
	b.abort()
	return err
}

// Abort closes the connection to etcd at once: the requests in flight and
// every later one fail. A stopping process whose cluster does not answer
// uses it so as to wait no longer (fleet.StopTimeout); Close afterwards
// revokes nothing, and the lease, with the session's keys and locks,
// expires by itself after its TTL.
func (b *Backend) Abort() { b.abort() }

// Session is a live session of the storage: a node's process, its lease
// and the locks it holds.
type Session struct {
	SessionInfo
	Lease clientv3.LeaseID
	// LastSeen is when the lease was last renewed (its TTL minus what is
	// left of it), to the second.
	LastSeen time.Time
	// Locks are the names of the locks the session holds, sorted.
	Locks []string
}

// Sessions lists the live sessions, sorted by node name, from the
// ".sessions/" keys (each on its own lease, gone when the lease expires)
// and the lock holders' keys. It works on a read-only backend.
func (b *Backend) Sessions(ctx context.Context) ([]Session, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	resp, err := b.cli.Get(ctx, b.cfg.Prefix+".sessions/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd: listing sessions: %w", err)
	}
	locks, err := b.cli.Get(ctx, b.cfg.Prefix+".locks/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("etcd: listing locks: %w", err)
	}
	held := map[clientv3.LeaseID][]string{}
	for _, kv := range locks.Kvs {
		// <prefix>.locks/<name>/.holders/<lease, hex>
		name, hex, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), b.cfg.Prefix+".locks/"), "/.holders/")
		id, err := strconv.ParseInt(hex, 16, 64)
		if ok && err == nil {
			held[clientv3.LeaseID(id)] = append(held[clientv3.LeaseID(id)], name)
		}
	}
	var out []Session
	for _, kv := range resp.Kvs {
		s := Session{Lease: clientv3.LeaseID(kv.Lease)}
		if json.Unmarshal(kv.Value, &s.SessionInfo) != nil {
			continue
		}
		if ttl, err := b.cli.TimeToLive(ctx, s.Lease); err == nil && ttl.TTL > 0 {
			s.LastSeen = time.Now().Add(-time.Duration(ttl.GrantedTTL-ttl.TTL) * time.Second).Truncate(time.Second)
		} else {
			continue // expired between the two reads
		}
		s.Locks = held[s.Lease]
		sort.Strings(s.Locks)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Started.Before(out[j].Started)
	})
	return out, nil
}
