// Package sealed keeps private keys encrypted at rest: a store.Backend
// wrapper that seals the value of every secret key (store.IsSecret) to age
// recipients (filippo.io/age) when it is written and opens it with the node's
// age identity when it is read. Certificates, chains and metadata pass
// through unchanged, so they stay readable to anyone with access to the
// storage; private keys are readable only to holders of an identity.
//
// A sealed value is an ASCII-armored age file ("-----BEGIN AGE ENCRYPTED
// FILE-----"). Reading a secret key whose value is not sealed fails with
// ErrNotSealed rather than returning a private key someone stored in plain
// text.
package sealed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/acmehook/acmehook/engine/store"
)

// ErrNotSealed: a secret key's stored value is not an age file.
var ErrNotSealed = errors.New("sealed: private key stored unencrypted")

// ErrIdentity: the node's identity cannot open what the storage holds.
var ErrIdentity = errors.New("sealed: identity cannot open the sealed values")

// CheckKey holds a value sealed to the fleet's recipients when the storage
// was first opened through a wrapper; Open checks that the node's identity
// opens it, so a node configured with a key pair of its own refuses to start
// instead of writing keys the rest of the fleet cannot read.
// The names below "sealed/" belong to the wrapper; List does not show
// them.
const CheckKey = checkDir + "check"

const checkDir = "sealed/"

const checkPlaintext = "acmehook sealed storage check\n"

// Backend is a store.Backend whose secret values are sealed. It is safe for
// concurrent use.
type Backend struct {
	store.Backend
	recipients []age.Recipient
	identities []age.Identity
}

// Open wraps b. recipients are the fleet's age recipients, every sealed
// value is encrypted to all of them; identities open them. Open fails with
// an error wrapping ErrIdentity when the identities cannot open a value
// sealed to the recipients, or the value stored under CheckKey by the first
// node (which it writes when it is missing).
func Open(ctx context.Context, b store.Backend, recipients []age.Recipient, identities []age.Identity) (*Backend, error) {
	if len(recipients) == 0 {
		return nil, errors.New("sealed: no age recipients")
	}
	if len(identities) == 0 {
		return nil, errors.New("sealed: no age identity")
	}
	s := &Backend{Backend: b, recipients: recipients, identities: identities}
	probe, err := s.seal([]byte(checkPlaintext))
	if err != nil {
		return nil, err
	}
	if _, err := s.open(CheckKey, probe); err != nil {
		return nil, fmt.Errorf("%w: none of the identities is one of the recipients", ErrIdentity)
	}
	stored, err := b.Get(ctx, CheckKey)
	if errors.Is(err, store.ErrNotFound) {
		err = b.Apply(ctx, nil, []store.Op{store.Create(CheckKey, probe)})
		if err == nil || errors.Is(err, store.ErrReadOnly) {
			return s, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("storing %s: %w", CheckKey, err)
		}
		stored, err = b.Get(ctx, CheckKey) // another node stored it first
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", CheckKey, err)
	}
	if _, err := s.open(CheckKey, stored); err != nil {
		return nil, fmt.Errorf("%w: %s was sealed to other recipients than this identity's (%v)", ErrIdentity, CheckKey, err)
	}
	return s, nil
}

// Get returns the value under key, opened if key is secret.
func (s *Backend) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := s.Backend.Get(ctx, key)
	if err != nil || !store.IsSecret(key) {
		return v, err
	}
	return s.open(key, v)
}

// Put stores value under key, sealed if key is secret.
func (s *Backend) Put(ctx context.Context, key string, value []byte) error {
	if store.IsSecret(key) {
		var err error
		if value, err = s.seal(value); err != nil {
			return fmt.Errorf("sealing %s: %w", key, err)
		}
	}
	return s.Backend.Put(ctx, key, value)
}

// Apply applies ops with the values of secret keys sealed.
func (s *Backend) Apply(ctx context.Context, lock store.Lock, ops []store.Op) error {
	out := make([]store.Op, len(ops))
	for i, op := range ops {
		if (op.Kind == store.OpPut || op.Kind == store.OpCreate) && store.IsSecret(op.Key) {
			v, err := s.seal(op.Value)
			if err != nil {
				return fmt.Errorf("sealing %s: %w", op.Key, err)
			}
			op.Value = v
		}
		out[i] = op
	}
	return s.Backend.Apply(ctx, lock, out)
}

// List lists prefix, without the wrapper's own CheckKey.
func (s *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	list, err := s.Backend.List(ctx, prefix)
	if err != nil || (prefix != "" && prefix != checkDir) {
		return list, err
	}
	hide := checkDir
	if prefix == checkDir {
		hide = strings.TrimPrefix(CheckKey, checkDir)
	}
	out := list[:0]
	for _, e := range list {
		if e != hide {
			out = append(out, e)
		}
	}
	return out, nil
}

// Unwrap returns the wrapped backend.
func (s *Backend) Unwrap() store.Backend { return s.Backend }

func (s *Backend) seal(plain []byte) ([]byte, error) {
	if len(plain) > store.MaxValueSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", store.ErrTooLarge, len(plain), store.MaxValueSize)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, s.recipients...)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (s *Backend) open(key string, sealed []byte) ([]byte, error) {
	if !bytes.HasPrefix(bytes.TrimLeft(sealed, " \t\r\n"), []byte(armor.Header)) {
		return nil, fmt.Errorf("reading %s: %w", key, ErrNotSealed)
	}
	r, err := age.Decrypt(armor.NewReader(bytes.NewReader(sealed)), s.identities...)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", key, err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", key, err)
	}
	return plain, nil
}

// ParseRecipients parses age recipients ("age1…"), one per string.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	rs, err := age.ParseRecipients(strings.NewReader(strings.Join(list, "\n")))
	if err != nil {
		return nil, fmt.Errorf("parsing age recipients: %w", err)
	}
	return rs, nil
}

// LoadIdentity reads the age identity file at path (as written by
// age-keygen). The file MUST NOT be readable or writable by group or others
// (mode 0600 or stricter): an identity opens every private key of the fleet.
func LoadIdentity(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the age identity: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the age identity: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("age identity file %s has mode %04o: it must not be accessible to group or others (chmod 600 %s)", path, m, path)
	}
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("parsing the age identity file %s: %w", path, err)
	}
	return ids, nil
}
