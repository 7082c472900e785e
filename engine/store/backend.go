package store

import (
	"context"
	"errors"
	"path"
	"strconv"
	"strings"
	"time"
)

// ErrLockLost is returned by Backend.Apply when the lock given as its fence
// is no longer held: released, taken over by another holder after its lease
// expired, or closed with its backend. None of the operations was applied.
// A caller MUST NOT retry such a write blindly: another holder may have
// written since; it should stop working on what the lock protected.
var ErrLockLost = errors.New("store: lock lost")

// ErrInvalidKey: a key or lock name that ValidKey rejects.
var ErrInvalidKey = errors.New("store: invalid key")

// ErrTooLarge: a value over MaxValueSize.
var ErrTooLarge = errors.New("store: value too large")

// MaxValueSize is the largest value a Backend must store: 1 MiB, below
// etcd's default request limit (1.5 MiB).
const MaxValueSize = 1 << 20

// StorageLock is the name of the lock a single-node process holds over the
// whole storage for its run (acmehook run, daemon, issue ...).
const StorageLock = "storage"

// Backend is the storage contract: keys and bytes, a lock that carries a
// fencing token, and an ordered, fenced multi-operation write. Everything
// certificate-shaped (accounts, versions, the current pointer, rollover,
// keys moved aside, metadata) is one layer above, in Store, written once for
// every backend. A backend does not parse what it stores.
//
// Keys are slash-separated paths; see ValidKey. A key MUST NOT also be a
// prefix of other keys ("a" and "a/b"): a file system cannot hold both, and
// a backend MAY refuse the second. Values are small (certificates, keys,
// JSON): a value over MaxValueSize fails with an error wrapping ErrTooLarge,
// on Put and Apply and, should one be found, on Get. Two naming rules give a key
// meaning a backend or a wrapper may act on: IsSecret (the value is a
// private key, which an encrypting wrapper seals) and IsLink (the value names
// a sibling prefix, which the file backend stores as a symbolic link).
//
// Implementations MUST be safe for concurrent use by multiple goroutines and
// MUST honour ctx (return its error once it is done). Missing keys fail with
// an error wrapping ErrNotFound; invalid keys with one wrapping
// ErrInvalidKey; writes to a backend opened read-only with one wrapping
// ErrReadOnly. The storetest package checks all of this; every backend MUST
// pass storetest.Run.
type Backend interface {
	// Get returns the value stored under key. A missing key is an error
	// wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)

	// Put stores value under key, replacing any earlier value. It MUST be
	// atomic (a reader sees the old value or the new, never a mix or a
	// truncated value) and durable when it returns. Put is not fenced: the
	// certificate layer writes through Apply.
	Put(ctx context.Context, key string, value []byte) error

	// Delete removes key. Deleting a missing key is not an error. It MUST
	// NOT remove other keys (in particular not the keys under key+"/").
	Delete(ctx context.Context, key string) error

	// List returns what is directly below prefix, sorted, like a directory
	// listing: for each key starting with prefix, the next path segment
	// after prefix, followed by "/" if more segments follow. prefix MUST
	// be "" or end in "/". Nothing below prefix is an empty list, not an
	// error. Once the last key below a prefix is deleted, the prefix is no
	// longer listed.
	List(ctx context.Context, prefix string) ([]string, error)

	// Stat returns the size and modification time of the value under key,
	// without reading it; a missing key is an error wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (KeyInfo, error)

	// Lock takes the lock called name without waiting. If another holder
	// has it (another process, another node, or another Lock call in this
	// process), it fails at once with an error wrapping ErrLocked that
	// says, where the backend knows, who holds it. Lock names follow the
	// key rules (ValidKey) and live in their own namespace: a lock called
	// "x" has nothing to do with the key "x".
	//
	// Every successful Lock of a name returns a fencing token greater than
	// the token of every earlier successful Lock of that name, so a write
	// from a holder that lost the lock can be told apart and refused.
	Lock(ctx context.Context, name string) (Lock, error)

	// Apply performs ops in order, fenced by lock: if lock was not
	// returned by this backend's Lock or is no longer held, Apply fails
	// with an error wrapping ErrLockLost and applies nothing. A nil lock
	// means no fence.
	//
	// Each operation MUST be atomic and durable before the next one
	// starts, so that after an error or a crash the operations in effect
	// are a prefix of ops: the last operation is the commit point, and a
	// reader that sees its effect sees every earlier one. A backend MAY
	// apply all of ops as one transaction instead (etcd does, guarded by
	// "I still own the lock"); it MUST NOT apply them out of order.
	//
	// The one relaxation is Op.Batch: a run of consecutive operations
	// marked Batch MAY become durable together, in any order among
	// themselves, provided all of them are durable before the operation
	// that ends the run (the next one without Batch) starts. They still
	// take effect in order for readers, and after an error the operations
	// in effect are still a prefix. The last operation never counts as
	// part of a run.
	//
	// OpCreate preconditions are checked before anything is applied: if
	// one of those keys exists, Apply fails with an error wrapping
	// ErrExists and applies nothing.
	Apply(ctx context.Context, lock Lock, ops []Op) error

	// Close releases the locks this backend holds (their fences fail
	// afterwards) and the backend's resources. Other methods fail with an
	// error wrapping ErrClosed afterwards.
	Close() error
}

// Lock is a held lock of a Backend, the fence given to Apply.
type Lock interface {
	// Name is the name the lock was taken under.
	Name() string
	// Token is the fencing token: greater than every earlier holder's.
	Token() uint64
	// Done is closed when the lock is no longer held: after Unlock, after
	// the backend's Close, or when the backend lost it (an etcd lease that
	// expired). Work under the lock SHOULD stop then; a write would fail
	// with ErrLockLost.
	Done() <-chan struct{}
	// Unlock releases the lock. Fences on it fail afterwards. Unlocking
	// twice is not an error.
	Unlock(ctx context.Context) error
}

// OpKind is what an Op does.
type OpKind int

// The kinds of Op.
const (
	// OpPut stores Value under Key, replacing any earlier value.
	OpPut OpKind = iota + 1
	// OpCreate stores Value under Key, which MUST NOT exist yet (see
	// Backend.Apply): a key the caller must never overwrite, such as an
	// account key.
	OpCreate
	// OpDelete removes Key; a missing key is not an error.
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpCreate:
		return "create"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(k)) + ")"
}

// Op is one write of Backend.Apply.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte // for OpPut and OpCreate
	// Batch lets the backend make this operation durable together with
	// the Batch operations around it (see Backend.Apply): after a crash,
	// any of a run of them may be in effect without the others, but the
	// operation that ends the run only with all of them. The file backend
	// then syncs each directory once per run instead of once per file.
	// Use it for writes that nothing reads before the end of the run
	// (the files of a version that is not current yet).
	Batch bool
}

// Put returns an OpPut of value under key.
func Put(key string, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// Create returns an OpCreate of value under key.
func Create(key string, value []byte) Op { return Op{Kind: OpCreate, Key: key, Value: value} }

// Delete returns an OpDelete of key.
func Delete(key string) Op { return Op{Kind: OpDelete, Key: key} }

// Batched returns op marked Batch.
func Batched(op Op) Op {
	op.Batch = true
	return op
}

// KeyInfo is what Stat says about a key.
type KeyInfo struct {
	Key      string
	Size     int64     // bytes of the value
	Modified time.Time // when it was last written; zero if the backend does not know
}

// ValidKey reports whether key can name a value (or a lock): one or more
// segments separated by "/", each of 1 to 255 letters, digits, '.', '_',
// '-', '+' or '@', not starting with '.' (names starting with '.' are left
// to backends for their own use, such as temporary files). No leading or
// trailing slash, no empty segment, so no "." or "..".
func ValidKey(key string) bool {
	if key == "" || len(key) > 1024 {
		return false
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || len(seg) > 255 || seg[0] == '.' {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '.' || c == '_' || c == '-' || c == '+' || c == '@') {
				return false
			}
		}
	}
	return true
}

// IsSecret reports whether the value under key is a private key, by the
// naming rule every writer of secrets follows (the certificate layer
// included): the key's last segment is "key.pem", ends in ".key.pem", or is
// "key-<anything>.pem.old" (a previous account key). An encrypting wrapper
// seals exactly these values, and SHOULD refuse to return such a value that
// it finds unsealed.
func IsSecret(key string) bool {
	base := path.Base(key)
	return base == "key.pem" || strings.HasSuffix(base, ".key.pem") ||
		strings.HasPrefix(base, "key-") && strings.HasSuffix(base, ".pem.old")
}

// IsLink reports whether the value under key names a sibling prefix, by the
// naming rule: the key's last segment is "current". Its value is a relative
// path below the key's parent, itself a valid key (ValidKey; a backend MAY
// refuse another value with ErrInvalidKey), such as "versions/20261128T224300Z-04a1" for
// the key "certificates/www/current". Any backend may store it as bytes; the
// file backend stores it as a symbolic link, so that programs reading the
// storage directory (a web server reading current/fullchain.pem) follow it.
func IsLink(key string) bool { return path.Base(key) == "current" }
