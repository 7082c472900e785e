// Package store keeps acmehook's persistent state: ACME accounts per CA and,
// per certificate, versions of key, certificate and chain plus metadata.
//
// The engine uses the Store interface; FileStore implements it with files
// under one directory (see Open), and a distributed backend can implement
// it later without touching the lifecycle.
package store

import (
	"context"
	"errors"
	"regexp"
	"time"

	"github.com/acmehook/acmehook/engine/renewal"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no such account, certificate or version.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: the operation would overwrite something a failed run
	// must never lose (an account key).
	ErrExists = errors.New("store: already exists")
	// ErrInvalidName: a certificate name that could escape its directory.
	ErrInvalidName = errors.New("store: invalid certificate name")
	// ErrLocked: another process holds the storage lock.
	ErrLocked = errors.New("store: storage is locked by another process")
	// ErrKeyMovedAside: the current version's key was moved aside
	// (keyCompromise) and must not be used again.
	ErrKeyMovedAside = errors.New("store: certificate key was moved aside")
	// ErrReadOnly: a write to a store opened read-only (OpenReadOnly).
	ErrReadOnly = errors.New("store: opened read-only")
)

// Store is acmehook's persistent state. Implementations MUST make every
// write atomic (a reader sees the old or the new content, never a mix), MUST
// make a new certificate version fully durable before it becomes current,
// MUST keep at least the previous version, and MUST NOT overwrite or delete
// an account key except through RolloverAccountKey, which keeps the old
// one. Only one process may use a Store at a time; the constructor of an
// implementation takes the lock and Close releases it.
//
// Certificate names MUST satisfy ValidName; other names fail with
// ErrInvalidName. Missing things fail with ErrNotFound.
type Store interface {
	// LoadAccount returns the account stored for the CA directory URL.
	LoadAccount(ctx context.Context, directory string) (*Account, error)
	// CreateAccountKey stores the key of a new account for directory. It
	// fails with ErrExists if that CA already has a key: call it before
	// registering the account (RFC 8555 §7.3), so a crash afterwards
	// never loses a key the CA knows.
	CreateAccountKey(ctx context.Context, directory string, keyPEM []byte) error
	// SaveAccountInfo records the account's metadata (URL, contact ...).
	// The key must exist.
	SaveAccountInfo(ctx context.Context, directory string, info AccountInfo) error
	// RolloverAccountKey makes keyPEM the account key (RFC 8555 §7.3.5)
	// and keeps the previous key beside it.
	RolloverAccountKey(ctx context.Context, directory string, keyPEM []byte) error

	// Names lists the certificates that have stored state, sorted.
	Names(ctx context.Context) ([]string, error)
	// LoadCertificate returns the current version of name. If its key was
	// moved aside the version is returned with a nil KeyPEM and an error
	// wrapping ErrKeyMovedAside.
	LoadCertificate(ctx context.Context, name string) (*Version, error)
	// LoadVersion returns a given version of name (current or previous).
	LoadVersion(ctx context.Context, name, id string) (*Version, error)
	// Versions lists the stored version IDs of name, oldest first.
	Versions(ctx context.Context, name string) ([]string, error)
	// SaveCertificate stores v as a new version of name and makes it
	// current once it is fully written. It sets v.ID.
	SaveCertificate(ctx context.Context, name string, v *Version) error
	// MoveKeyAside moves the current version's private key out of use
	// (for a keyCompromise revocation, RFC 8555 §7.6) and returns where
	// it now is. The certificate, chain and metadata stay.
	MoveKeyAside(ctx context.Context, name string) (string, error)

	// LoadMeta returns the operational metadata of name (ARI, events,
	// pending deploy); a zero Meta if none was saved yet.
	LoadMeta(ctx context.Context, name string) (*Meta, error)
	// SaveMeta replaces the operational metadata of name.
	SaveMeta(ctx context.Context, name string, m *Meta) error

	// Close releases the lock. The Store is unusable afterwards.
	Close() error
}

// Account is a stored ACME account: its key and what is known about it.
type Account struct {
	Directory string // CA directory URL
	KeyPEM    []byte // PKCS#8 private key, PEM
	Info      AccountInfo
}

// AccountInfo is an account's metadata (RFC 8555 §7.1.2).
type AccountInfo struct {
	URL                  string    `json:"url,omitempty"` // account URL, the JWS "kid"
	Contact              []string  `json:"contact,omitempty"`
	KeyType              string    `json:"key_type,omitempty"`
	TermsOfServiceAgreed bool      `json:"terms_of_service_agreed,omitempty"`
	EABKeyID             string    `json:"eab_kid,omitempty"`
	CreatedAt            time.Time `json:"created_at,omitzero"`
	UpdatedAt            time.Time `json:"updated_at,omitzero"`
}

// Version is one issued certificate with its key: what SaveCertificate
// writes together and LoadCertificate reads together.
type Version struct {
	// ID names the version; set by SaveCertificate from the time and the
	// serial, sortable by time.
	ID       string
	KeyPEM   []byte // private key, PEM; nil after MoveKeyAside
	CertPEM  []byte // the end-entity certificate, PEM
	ChainPEM []byte // the issuer certificates, PEM, leaf's issuer first
	Info     VersionInfo
}

// Fullchain returns the certificate followed by its chain.
func (v *Version) Fullchain() []byte {
	out := make([]byte, 0, len(v.CertPEM)+len(v.ChainPEM))
	return append(append(out, v.CertPEM...), v.ChainPEM...)
}

// VersionInfo describes one version; it is written with it and never
// changes afterwards.
type VersionInfo struct {
	OrderURL  string    `json:"order_url,omitempty"`
	CertURL   string    `json:"cert_url,omitempty"`
	Serial    string    `json:"serial,omitempty"` // hex
	Names     []string  `json:"names,omitempty"`  // identifiers as requested
	KeyType   string    `json:"key_type,omitempty"`
	Profile   string    `json:"profile,omitempty"`
	Issuer    string    `json:"issuer,omitempty"` // issuer common name
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	// ReusedKey reports that the key came from the previous version.
	ReusedKey bool `json:"reused_key,omitempty"`
}

// Meta is the operational state of a certificate, which changes between
// versions: renewal state, recent events, a pending deploy.
type Meta struct {
	// Renewal is the lineage's renewal state (ARI window and chosen time,
	// failures and backoff, recent orders for the reissue guard,
	// revocation), updated by the engine through its Record methods.
	Renewal renewal.State `json:"renewal,omitzero"`
	// Events holds the most recent events, oldest first; SaveMeta keeps
	// the last MaxEvents.
	Events []Event `json:"events,omitempty"`
	// PendingDeploy is set when issuance succeeded but a deploy script
	// failed; the next run retries the deploy without a new order.
	PendingDeploy bool `json:"pending_deploy,omitempty"`
	// KeysMovedAside lists versions whose key was moved aside.
	KeysMovedAside []string `json:"keys_moved_aside,omitempty"`
}

// MaxEvents is how many events Meta keeps.
const MaxEvents = 50

// Event is a recorded lifecycle event and its outcome.
type Event struct {
	Time    time.Time `json:"time"`
	Name    string    `json:"name"`             // issued, renew, failed, revoke, deploy ...
	Result  string    `json:"result"`           // "ok" or "error"
	Detail  string    `json:"detail,omitempty"` // error text, ACME problem type and detail
	Version string    `json:"version,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ValidName reports whether name can name a certificate: 1 to 100 letters,
// digits, '.', '_' or '-', not starting with '.'. The same rule as
// config.ValidName; it keeps every name inside its directory.
func ValidName(name string) bool { return nameRE.MatchString(name) }
