package fleet

// Any node answers: the owner of a certificate publishes each http-01 and
// tls-alpn-01 challenge in etcd; every node's relay watches, presents it
// through its own solver and acknowledges; the owner answers the CA once
// every live node acknowledged. The keys, below the storage prefix:
//
//	.relay/members/NODE        a node that answers (its relay's lease)
//	.relay/challenges/TOKEN    a published challenge (the owner's lease)
//	.relay/acks/TOKEN/NODE     NODE presents TOKEN, or why not (NODE's lease)
//
// Every key is on the lease of the process that wrote it, so what a node
// published or acknowledged vanishes with it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store/etcd"
)

// ErrNotAnswered is wrapped by the error of a relayed challenge that not
// every live node presented (or cleaned up) within [storage]
// relay_timeout, or that a node could not present.
var ErrNotAnswered = errors.New("fleet: not every node answers the challenge")

// Answerer presents the challenges other nodes relay through this node's
// own solvers (engine.Plugins).
type Answerer interface {
	Present(ctx context.Context, ch engine.RelayChallenge) error
	CleanUp(ctx context.Context, ch engine.RelayChallenge) error
}

// RelayOptions configure StartRelay.
type RelayOptions struct {
	// Answerer presents what the other nodes publish. Nil makes a relay
	// that only publishes (a one-shot `acmehook run`, `issue` or `check
	// --solve`): it neither registers nor answers.
	Answerer Answerer
	// Logger receives what the relay presents and cleans up; nil
	// discards.
	Logger *slog.Logger
}

// Relay is a node's part in answering challenges anywhere: it implements
// engine.Relay for the certificates this node orders (Publish, Withdraw),
// and presents those of the other nodes. It is safe for concurrent use.
type Relay struct {
	cli      *clientv3.Client
	closeCli func() error
	disarm   func() // of the abort StopTimeout after StartRelay's context ends
	prefix   string
	node     string
	ttl      int
	timeout  time.Duration
	log      *slog.Logger
	answerer Answerer

	sessMu sync.Mutex
	sess   *concurrency.Session

	mu      sync.Mutex
	answers map[string]*answer // by token: what this node presents for others

	cancel     context.CancelFunc
	done       chan struct{}
	registered atomic.Bool // the node registered once
}

var _ engine.Relay = (*Relay)(nil)

// answer is a challenge of another node that this node presents.
type answer struct {
	ch        engine.RelayChallenge
	owner     string        // the publishing node
	lease     int64         // and its lease
	presented chan struct{} // closed once Present returned
	err       error         // Present's
	withdrawn bool          // the challenge was deleted
	acked     clientv3.LeaseID
}

// record is the value of a .relay/challenges/ key.
type record struct {
	Owner            string          `json:"owner"`
	Lease            int64           `json:"lease"` // the owner process's relay lease
	Cert             string          `json:"cert"`
	Type             string          `json:"type"`
	Identifier       acme.Identifier `json:"identifier"`
	Wildcard         bool            `json:"wildcard,omitempty"`
	Token            string          `json:"token"`
	KeyAuthorization string          `json:"key_authorization"`
	URL              string          `json:"url,omitempty"`
	Published        time.Time       `json:"published"`
}

func (r record) challenge() engine.RelayChallenge {
	return engine.RelayChallenge{Cert: r.Cert, Type: r.Type, Identifier: r.Identifier, Wildcard: r.Wildcard,
		Token: r.Token, KeyAuthorization: r.KeyAuthorization, URL: r.URL}
}

// ackValue is the value of a .relay/acks/ key: empty Error when the node
// presents the challenge.
type ackValue struct {
	Error string `json:"error,omitempty"`
}

// member is the value of a .relay/members/ key.
type member struct {
	Node    string    `json:"node"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

// StartRelay connects to the etcd storage s describes and starts answering
// the challenges the other processes publish, until Close. It registers
// the node among those an owner waits for once it watches.
func StartRelay(ctx context.Context, s config.Storage, opts RelayOptions) (*Relay, error) {
	if s.Backend != config.BackendEtcd {
		return nil, ErrNotFleet
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		prefix: s.Prefix, node: s.Node, timeout: s.RelayTimeout.Duration,
		ttl: int((s.LeaseTTL.Duration + time.Second - 1) / time.Second),
		log: log.With("node", s.Node), answerer: opts.Answerer, answers: map[string]*answer{},
		done: make(chan struct{}),
	}
	if r.timeout <= 0 {
		r.timeout = config.DefaultRelayTimeout
	}
	// A read-only backend: a connection, no session of its own in
	// .sessions/ (the node's storage session is the one listed).
	b, err := etcd.Open(ctx, etcd.Config{
		Endpoints: s.Endpoints,
		CAFile:    s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile,
		Username: s.Username, Password: s.Password.Reveal(),
		Prefix: s.Prefix, LeaseTTL: s.LeaseTTL.Duration, Node: s.Node,
		ReadOnly: true, Logger: opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	r.cli, r.closeCli = b.Client(), b.Close
	r.disarm = abortAfterStop(ctx, b, r.log, "relay")
	if _, err := r.session(ctx); err != nil {
		r.disarm()
		r.closeCli()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	if r.answerer == nil {
		close(r.done)
		return r, nil
	}
	go r.answerLoop(rctx)
	return r, nil
}

func (r *Relay) membersPrefix() string          { return r.prefix + ".relay/members/" }
func (r *Relay) challengesPrefix() string       { return r.prefix + ".relay/challenges/" }
func (r *Relay) challengeKey(tok string) string { return r.challengesPrefix() + tok }
func (r *Relay) acksPrefix(tok string) string   { return r.prefix + ".relay/acks/" + tok + "/" }

// session returns the relay's lease, granting a new one when the last
// expired (the process was paused or cut off longer than the lease TTL).
func (r *Relay) session(ctx context.Context) (*concurrency.Session, error) {
	r.sessMu.Lock()
	defer r.sessMu.Unlock()
	if r.sess != nil {
		select {
		case <-r.sess.Done():
			r.log.Warn("relay lease expired; the node registers again")
			r.sess = nil
		default:
			return r.sess, nil
		}
	}
	// The lease is granted within the request timeout (the client would
	// wait for an unreachable cluster forever); its keep-alive then runs
	// until Close.
	gctx, cancel := r.rctx(ctx)
	defer cancel()
	lease, err := r.cli.Grant(gctx, int64(r.ttl))
	if err != nil {
		return nil, fmt.Errorf("etcd: granting the relay's %ds lease: %w", r.ttl, err)
	}
	s, err := concurrency.NewSession(r.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(r.ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("etcd: starting the relay's session: %w", err)
	}
	r.sess = s
	return s, nil
}

// rctx bounds one etcd request.
func (r *Relay) rctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, etcd.DefaultRequestTimeout)
}

// Close stops answering: it cleans up what this node presents for others,
// then revokes the relay's lease (its registration and acknowledgements
// go with it) and closes the connection.
func (r *Relay) Close() error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	answers := r.answers
	r.answers = map[string]*answer{}
	r.mu.Unlock()
	for _, a := range answers {
		<-a.presented
		if a.err == nil {
			r.cleanUp(a)
		}
	}
	r.sessMu.Lock()
	s := r.sess
	r.sess = nil
	r.sessMu.Unlock()
	var err error
	if s != nil {
		err = etcd.CloseSession(s)
	}
	if cerr := r.closeCli(); err == nil {
		err = cerr
	}
	r.disarm()
	return err
}

// answerLoop presents what is published, then follows the changes, until
// ctx ends; after a lost lease or a broken watch it starts over.
func (r *Relay) answerLoop(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		sess, err := r.session(ctx)
		if err == nil {
			err = r.follow(ctx, sess)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.log.Warn("relay: watching the published challenges failed; starting over", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// follow syncs with the published challenges, registers the node and
// answers every change, until the session ends or the watch fails.
func (r *Relay) follow(ctx context.Context, sess *concurrency.Session) error {
	rev, err := r.resync(ctx, sess)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := r.cli.Watch(wctx, r.challengesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	info, _ := json.Marshal(member{Node: r.node, PID: os.Getpid(), Started: time.Now().UTC()})
	pctx, pcancel := r.rctx(ctx)
	_, err = r.cli.Put(pctx, r.membersPrefix()+r.node, string(info), clientv3.WithLease(sess.Lease()))
	pcancel()
	if err != nil {
		return fmt.Errorf("etcd: registering the node: %w", err)
	}
	if r.registered.Swap(true) {
		r.log.Info("relay: registered again; answering the fleet's challenges", "lease", fmt.Sprintf("%x", int64(sess.Lease())))
	} else {
		r.log.Info("relay: answering the fleet's http-01 and tls-alpn-01 challenges", "lease", fmt.Sprintf("%x", int64(sess.Lease())))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("the relay's lease expired")
		case wr, ok := <-wch:
			if !ok {
				return errors.New("the watch ended")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				tok := strings.TrimPrefix(string(ev.Kv.Key), r.challengesPrefix())
				if ev.Type == clientv3.EventTypeDelete {
					r.withdrawn(tok)
					continue
				}
				var rec record
				if err := json.Unmarshal(ev.Kv.Value, &rec); err != nil {
					r.log.Warn("relay: unreadable challenge", "key", string(ev.Kv.Key), "error", err)
					continue
				}
				r.publishedBy(ctx, rec)
			}
		}
	}
}

// resync makes what this node presents match what is published now, and
// acknowledges again on sess what it presents; it returns the revision
// read.
func (r *Relay) resync(ctx context.Context, sess *concurrency.Session) (int64, error) {
	gctx, cancel := r.rctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(gctx, r.challengesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: reading the published challenges: %w", err)
	}
	published := map[string]record{}
	for _, kv := range resp.Kvs {
		var rec record
		if json.Unmarshal(kv.Value, &rec) == nil {
			published[rec.Token] = rec
		}
	}
	r.mu.Lock()
	var gone []string
	var reack []*answer
	for tok, a := range r.answers {
		if rec, ok := published[tok]; !ok || rec.Lease != a.lease {
			gone = append(gone, tok)
		} else {
			reack = append(reack, a)
		}
	}
	r.mu.Unlock()
	for _, tok := range gone {
		r.withdrawn(tok)
	}
	for _, a := range reack {
		go func() {
			select {
			case <-a.presented:
				r.ack(ctx, a)
			case <-ctx.Done():
			}
		}()
	}
	for _, rec := range published {
		r.publishedBy(ctx, rec)
	}
	return resp.Header.Revision, nil
}

// publishedBy presents rec unless this node published it (the
// publishing process presented it through its own solver) or this process
// presents it already.
func (r *Relay) publishedBy(ctx context.Context, rec record) {
	if rec.Owner == r.node {
		return
	}
	r.mu.Lock()
	if _, ok := r.answers[rec.Token]; ok {
		r.mu.Unlock()
		return
	}
	a := &answer{ch: rec.challenge(), owner: rec.Owner, lease: rec.Lease, presented: make(chan struct{})}
	r.answers[rec.Token] = a
	r.mu.Unlock()
	go func() {
		log := r.answerLog(a)
		log.Info("presenting a challenge relayed by its owner", "owner", a.owner)
		a.err = r.answerer.Present(ctx, a.ch)
		if a.err != nil {
			log.Error("presenting a relayed challenge failed", "owner", a.owner, "error", a.err)
		}
		// Acknowledged before presented is closed: withdrawn removes the
		// acknowledgement after it, never before.
		r.ack(ctx, a)
		close(a.presented)
	}()
}

func (r *Relay) answerLog(a *answer) *slog.Logger {
	id := a.ch.Identifier.Value
	if a.ch.Wildcard {
		id = "*." + id
	}
	return r.log.With("cert", a.ch.Cert, "identifier", id, "challenge", a.ch.Type)
}

// ack records on the current lease whether this node presents a (once
// per lease), unless a was withdrawn meanwhile.
func (r *Relay) ack(ctx context.Context, a *answer) {
	sess, err := r.session(ctx)
	if err != nil {
		r.log.Warn("relay: acknowledging", "error", err)
		return
	}
	r.mu.Lock()
	skip := a.withdrawn || a.acked == sess.Lease()
	a.acked = sess.Lease()
	r.mu.Unlock()
	if skip {
		return
	}
	v := ackValue{}
	if a.err != nil {
		v.Error = a.err.Error()
	}
	b, _ := json.Marshal(v)
	pctx, cancel := r.rctx(ctx)
	defer cancel()
	if _, err := r.cli.Put(pctx, r.acksPrefix(a.ch.Token)+r.node, string(b), clientv3.WithLease(sess.Lease())); err != nil && ctx.Err() == nil {
		r.answerLog(a).Warn("relay: acknowledging failed", "error", err)
	}
}

// withdrawn cleans up the challenge tok once its Present returned, if
// this node presented it, and removes the node's acknowledgement.
func (r *Relay) withdrawn(tok string) {
	r.mu.Lock()
	a, ok := r.answers[tok]
	if ok {
		delete(r.answers, tok)
		a.withdrawn = true
	}
	r.mu.Unlock()
	if !ok {
		return // never presented by this process
	}
	go func() {
		<-a.presented
		if a.err == nil {
			r.cleanUp(a)
		}
		ctx, cancel := context.WithTimeout(context.Background(), acme.CleanUpTimeout)
		defer cancel()
		if _, err := r.cli.Delete(ctx, r.acksPrefix(tok)+r.node); err != nil {
			r.answerLog(a).Warn("relay: removing the acknowledgement failed", "error", err)
		}
	}()
}

func (r *Relay) cleanUp(a *answer) {
	ctx, cancel := context.WithTimeout(context.Background(), acme.CleanUpTimeout)
	defer cancel()
	log := r.answerLog(a)
	if err := r.answerer.CleanUp(ctx, a.ch); err != nil {
		log.Warn("cleaning up a relayed challenge failed", "owner", a.owner, "error", err)
		return
	}
	log.Info("cleaned up a relayed challenge", "owner", a.owner)
}

// Publish publishes ch on this node's lease and returns once every other
// registered node acknowledged that it presents it. A node that is gone
// meanwhile (its lease expired) is not waited for; one that could not
// present ch fails it at once; after [storage] relay_timeout the error
// names the nodes that did not answer.
func (r *Relay) Publish(ctx context.Context, ch engine.RelayChallenge) error {
	sess, err := r.session(ctx)
	if err != nil {
		return err
	}
	rec := record{Owner: r.node, Lease: int64(sess.Lease()), Cert: ch.Cert, Type: ch.Type, Identifier: ch.Identifier, Wildcard: ch.Wildcard,
		Token: ch.Token, KeyAuthorization: ch.KeyAuthorization, URL: ch.URL, Published: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	pctx, cancel := r.rctx(ctx)
	defer cancel()
	if _, err := r.cli.Put(pctx, r.challengeKey(ch.Token), string(b), clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("etcd: publishing the %s challenge for %s: %w", ch.Type, shown(ch), err)
	}
	return r.await(ctx, ch, false)
}

// Withdraw deletes ch and waits, within [storage] relay_timeout, until
// every node that acknowledged it cleaned it up.
func (r *Relay) Withdraw(ctx context.Context, ch engine.RelayChallenge) error {
	dctx, cancel := r.rctx(ctx)
	defer cancel()
	if _, err := r.cli.Delete(dctx, r.challengeKey(ch.Token)); err != nil {
		return fmt.Errorf("etcd: withdrawing the %s challenge for %s: %w", ch.Type, shown(ch), err)
	}
	return r.await(ctx, ch, true)
}

func shown(ch engine.RelayChallenge) string {
	if ch.Wildcard {
		return "*." + ch.Identifier.Value
	}
	return ch.Identifier.Value
}

// await waits until every other live node acknowledged ch (cleanup false)
// or removed its acknowledgement (cleanup true), within r.timeout.
func (r *Relay) await(ctx context.Context, ch engine.RelayChallenge, cleanup bool) error {
	acks := r.acksPrefix(ch.Token)
	tctx, cancel := r.rctx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(tctx).Then(
		clientv3.OpGet(r.membersPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(acks, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("etcd: reading the acknowledgements of %s for %s: %w", ch.Type, shown(ch), err)
	}
	want := map[string]bool{} // nodes still to answer
	if !cleanup {
		for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
			// Not this node: it presented the challenge itself.
			if n := strings.TrimPrefix(string(kv.Key), r.membersPrefix()); n != r.node {
				want[n] = true
			}
		}
	}
	failed := map[string]string{}
	seen := func(node string, value []byte, deleted bool) {
		switch {
		case cleanup && !deleted:
			want[node] = true
		case cleanup:
			delete(want, node)
		case deleted:
		default:
			var v ackValue
			json.Unmarshal(value, &v)
			if v.Error != "" {
				failed[node] = v.Error
			}
			delete(want, node)
		}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		seen(strings.TrimPrefix(string(kv.Key), acks), kv.Value, false)
	}
	what := "present"
	if cleanup {
		what = "clean up"
	}
	fail := func() error {
		if len(failed) > 0 {
			var msgs []string
			for _, n := range sortedKeys(failed) {
				msgs = append(msgs, fmt.Sprintf("node %s: %s", n, failed[n]))
			}
			return fmt.Errorf("relaying the %s challenge for %s: %s: %w", ch.Type, shown(ch), strings.Join(msgs, "; "), ErrNotAnswered)
		}
		return nil
	}
	if err := fail(); err != nil {
		return err
	}
	if len(want) == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rev := resp.Header.Revision + 1
	ackw := r.cli.Watch(wctx, acks, clientv3.WithPrefix(), clientv3.WithRev(rev))
	memw := r.cli.Watch(wctx, r.membersPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterPut())
	for len(want) > 0 {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			missing := sortedKeys(want)
			return fmt.Errorf("relaying the %s challenge for %s: %s %s did not %s it within %s (storage.relay_timeout): %w",
				ch.Type, shown(ch), plural(len(missing), "node", "nodes"), strings.Join(missing, ", "), what, r.timeout, ErrNotAnswered)
		case wr := <-ackw:
			if err := wr.Err(); err != nil {
				return fmt.Errorf("etcd: watching the acknowledgements of %s for %s: %w", ch.Type, shown(ch), err)
			}
			for _, ev := range wr.Events {
				seen(strings.TrimPrefix(string(ev.Kv.Key), acks), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
			}
			if err := fail(); err != nil {
				return err
			}
		case wr := <-memw:
			if err := wr.Err(); err != nil {
				return fmt.Errorf("etcd: watching the fleet's nodes: %w", err)
			}
			for _, ev := range wr.Events {
				n := strings.TrimPrefix(string(ev.Kv.Key), r.membersPrefix())
				if want[n] {
					r.log.Warn("relay: a node left while its answer was awaited", "left", n, "challenge", ch.Type, "identifier", shown(ch))
					delete(want, n)
				}
			}
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
