package etcd

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The backend's client routes every KV and lease request through these
// wrappers, so that Abort ends them: each request's context is also
// cancelled by the backend's abort context. Closing the gRPC connection
// would not do: the client retries a request that failed that way (a
// hundred times, 25 ms apart) as long as its own context lives.

// withAbort returns ctx, also cancelled when abort is; call the returned
// function when the request is done.
func withAbort(ctx, abort context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(abort, cancel)
	return ctx, func() { stop(); cancel() }
}

// abortableKV is a clientv3.KV whose requests Abort ends.
type abortableKV struct {
	clientv3.KV
	abort context.Context
}

func (k abortableKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	ctx, done := withAbort(ctx, k.abort)
	defer done()
	return k.KV.Put(ctx, key, val, opts...)
}

func (k abortableKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, done := withAbort(ctx, k.abort)
	defer done()
	return k.KV.Get(ctx, key, opts...)
}

func (k abortableKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	ctx, done := withAbort(ctx, k.abort)
	defer done()
	return k.KV.Delete(ctx, key, opts...)
}

func (k abortableKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	ctx, done := withAbort(ctx, k.abort)
	defer done()
	return k.KV.Do(ctx, op)
}

// Txn's requests are made by Commit, with the context given here.
func (k abortableKV) Txn(ctx context.Context) clientv3.Txn {
	ctx, done := withAbort(ctx, k.abort)
	return &abortableTxn{Txn: k.KV.Txn(ctx), done: done}
}

type abortableTxn struct {
	clientv3.Txn
	done context.CancelFunc
}

func (t *abortableTxn) If(cs ...clientv3.Cmp) clientv3.Txn     { t.Txn = t.Txn.If(cs...); return t }
func (t *abortableTxn) Then(ops ...clientv3.Op) clientv3.Txn   { t.Txn = t.Txn.Then(ops...); return t }
func (t *abortableTxn) Else(ops ...clientv3.Op) clientv3.Txn   { t.Txn = t.Txn.Else(ops...); return t }
func (t *abortableTxn) Commit() (*clientv3.TxnResponse, error) { defer t.done(); return t.Txn.Commit() }

// abortableLease is a clientv3.Lease whose grants and revocations Abort
// ends (keep-alives end with the session, or when the client closes).
type abortableLease struct {
	clientv3.Lease
	abort context.Context
}

func (l abortableLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	ctx, done := withAbort(ctx, l.abort)
	defer done()
	return l.Lease.Grant(ctx, ttl)
}

func (l abortableLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	ctx, done := withAbort(ctx, l.abort)
	defer done()
	return l.Lease.Revoke(ctx, id)
}

func (l abortableLease) TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	ctx, done := withAbort(ctx, l.abort)
	defer done()
	return l.Lease.TimeToLive(ctx, id, opts...)
}
