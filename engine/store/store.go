// Package store keeps acmehook's persistent state: ACME accounts per CA and,
// per certificate, versions of key, certificate and chain plus the engine's
// metadata.
//
// It has two layers. A Backend knows keys and bytes, a lock with a fencing
// token and an ordered, fenced multi-operation write (Apply); FileBackend
// keeps them in files under one directory, the etcd backend in an etcd
// cluster. Store is the certificate layer above any Backend, written once:
// accounts and their key rollover, certificate versions, the current
// pointer, keep-last-N, keys moved aside, and the engine's metadata as
// opaque bytes committed with the version they describe.
package store

import (
	"errors"
	"regexp"
	"time"
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
	// ErrLocked: another process holds the storage lock (Backend.Lock).
	ErrLocked = errors.New("store: storage is locked by another process")
	// ErrClosed: the Store or Backend was closed.
	ErrClosed = errors.New("store: closed")
	// ErrKeyMovedAside: the current version's key was moved aside
	// (keyCompromise) and must not be used again.
	ErrKeyMovedAside = errors.New("store: certificate key was moved aside")
	// ErrReadOnly: a write to a store opened read-only (OpenReadOnly).
	ErrReadOnly = errors.New("store: opened read-only")
	// ErrRolloverPending: an account key rollover was begun and neither
	// finished nor undone.
	ErrRolloverPending = errors.New("store: an account key rollover is pending")
)

// Account is a stored ACME account: its key and what is known about it.
type Account struct {
	Directory string // CA directory URL
	KeyPEM    []byte // PKCS#8 private key, PEM
	Info      AccountInfo
	// PendingKeyPEM is the new key of a rollover begun with BeginRollover
	// and neither finished nor undone (a crash between storing it and the
	// CA's answer): the CA may know the account by either key.
	PendingKeyPEM []byte
}

// AccountInfo is an account's metadata (RFC 8555 §7.1.2).
type AccountInfo struct {
	URL                  string   `json:"url,omitempty"` // account URL, the JWS "kid"
	Contact              []string `json:"contact,omitempty"`
	KeyType              string   `json:"key_type,omitempty"`
	TermsOfServiceAgreed bool     `json:"terms_of_service_agreed,omitempty"`
	// TermsOfService is the terms URL (the directory's
	// meta.termsOfService) the account agreed to; TermsAnnounced the
	// different terms a tos-changed event was last raised for, and
	// TermsCheckedAt when the directory was last compared with them.
	TermsOfService string    `json:"terms_of_service,omitempty"`
	TermsAnnounced string    `json:"terms_announced,omitempty"`
	TermsCheckedAt time.Time `json:"terms_checked_at,omitzero"`
	EABKeyID       string    `json:"eab_kid,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"`
}

// Version is one issued certificate with its key: what Commit writes
// together and LoadCertificate reads together.
type Version struct {
	// ID names the version; set by Commit from the time and the serial,
	// sortable by time.
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
	OrderURL string   `json:"order_url,omitempty"`
	CertURL  string   `json:"cert_url,omitempty"`
	Serial   string   `json:"serial,omitempty"` // hex
	Names    []string `json:"names,omitempty"`  // identifiers as requested
	KeyType  string   `json:"key_type,omitempty"`
	// Profile is the profile the CA applied (the order's "profile"), ""
	// when it names none; ProfileRequested is the configured setting it
	// was ordered with ("auto" or a name).
	Profile          string    `json:"profile,omitempty"`
	ProfileRequested string    `json:"profile_requested,omitempty"`
	Issuer           string    `json:"issuer,omitempty"` // issuer common name
	NotBefore        time.Time `json:"not_before,omitzero"`
	NotAfter         time.Time `json:"not_after,omitzero"`
	IssuedAt         time.Time `json:"issued_at,omitzero"`
	// ReusedKey reports that the key came from the previous version.
	ReusedKey bool `json:"reused_key,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ValidName reports whether name can name a certificate: 1 to 100 letters,
// digits, '.', '_' or '-', not starting with '.'. The same rule as
// config.ValidName; it keeps every name inside its directory.
func ValidName(name string) bool { return nameRE.MatchString(name) }
