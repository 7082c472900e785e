package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/acmehook/acmehook/engine/renewal"
	"github.com/acmehook/acmehook/engine/store"
)

// Meta is the operational state of a certificate, which changes between
// versions: renewal state, recent events, a pending deploy. The engine owns
// it; the store keeps it as JSON bytes with the version it describes
// (store.Store.Commit, SaveState).
type Meta struct {
	// Renewal is the lineage's renewal state (ARI window and chosen time,
	// failures and backoff, recent orders for the reissue guard,
	// revocation), updated through its Record methods.
	Renewal renewal.State `json:"renewal,omitzero"`
	// Events holds the most recent events, oldest first; the last
	// MaxEvents are kept.
	Events []MetaEvent `json:"events,omitempty"`
	// PendingDeploy is set when issuance succeeded but a deploy script
	// failed; the next run retries the deploy without a new order.
	PendingDeploy bool `json:"pending_deploy,omitempty"`
	// HeldNotice is the last renewal-held event raised, so a hold is
	// announced once, and once more when the certificate in service turns
	// out to expire before it ends.
	HeldNotice *HeldNotice `json:"held_notice,omitempty"`
}

// HeldNotice records a renewal-held event that was raised.
type HeldNotice struct {
	Until    time.Time `json:"until"`              // the end of the hold announced
	Expiring bool      `json:"expiring,omitempty"` // it said the certificate expires first
}

// MaxEvents is how many events Meta keeps.
const MaxEvents = 50

// MetaEvent is a recorded lifecycle event and its outcome.
type MetaEvent struct {
	Time    time.Time `json:"time"`
	Name    string    `json:"name"`             // issued, renew, failed, revoke, deploy ...
	Result  string    `json:"result"`           // "ok" or "error"
	Detail  string    `json:"detail,omitempty"` // error text, ACME problem type and detail
	Version string    `json:"version,omitempty"`
}

// encode returns m as stored: the last MaxEvents events, every error text
// cut to store.MaxTextSize (a runaway script error cannot grow the
// metadata without bound).
func (m *Meta) encode() ([]byte, error) {
	cp := *m
	if n := len(cp.Events); n > MaxEvents {
		cp.Events = cp.Events[n-MaxEvents:]
	}
	cp.Events = append([]MetaEvent(nil), cp.Events...)
	for i := range cp.Events {
		cp.Events[i].Detail = store.CapText(cp.Events[i].Detail)
	}
	cp.Renewal.LastError = store.CapText(cp.Renewal.LastError)
	cp.Renewal.ARIError = store.CapText(cp.Renewal.ARIError)
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	return append(b, '\n'), nil
}

// readMeta returns the metadata of the certificate called name; a zero Meta
// if none was saved yet. Metadata that cannot be used (truncated, corrupt,
// too large) does not stop the certificate: it is set aside for inspection
// (when st is writable), a warning says where, and the metadata starts
// afresh from the stored versions — the next decision is made from the
// current certificate alone.
func readMeta(ctx context.Context, st *store.Store, name string, log *slog.Logger) (*Meta, error) {
	b, err := st.LoadState(ctx, name)
	return decodeMeta(ctx, st, name, b, err, log)
}

// decodeMeta decodes metadata read from st (b, err), setting it aside as
// readMeta says when it cannot be used.
func decodeMeta(ctx context.Context, st *store.Store, name string, b []byte, err error, log *slog.Logger) (*Meta, error) {
	m := &Meta{}
	if err == nil && b != nil {
		if derr := json.Unmarshal(b, m); derr != nil {
			err = fmt.Errorf("decoding metadata of %s: %w", name, derr)
		}
	}
	if err == nil {
		return m, nil
	}
	if !errors.Is(err, store.ErrTooLarge) && b == nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	aside, aerr := st.SetStateAside(ctx, name)
	switch {
	case errors.Is(aerr, store.ErrReadOnly):
		log.Warn("metadata unusable; showing the certificate without it", "cert", name, "error", err)
	case aerr != nil:
		return nil, fmt.Errorf("%w (and setting it aside: %w)", err, aerr)
	default:
		log.Warn("metadata unusable; set aside and rebuilt from the stored versions", "cert", name, "error", err, "kept_as", aside)
	}
	return &Meta{}, nil
}

// loadCurrent returns the current version of name and its metadata, read
// together (store.Store.LoadCurrent); the errors are LoadCertificate's
// (ErrNotFound, ErrKeyMovedAside with the version) and readMeta's.
//
// With infoOnly, the version has no PEM files (store.LoadCurrentInfo).
func (e *Engine) loadCurrent(ctx context.Context, name string, infoOnly bool) (*store.Version, *Meta, error) {
	load := e.store.LoadCurrent
	if infoOnly {
		load = e.store.LoadCurrentInfo
	}
	v, b, err := load(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrKeyMovedAside) {
		if !errors.Is(err, store.ErrTooLarge) {
			return nil, nil, err
		}
		// The metadata is too large to read: set aside, and the version
		// read on its own.
		m, merr := decodeMeta(ctx, e.storeFor(name), name, nil, err, e.log)
		if merr != nil {
			return nil, nil, merr
		}
		v, err = e.store.LoadCertificate(ctx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrKeyMovedAside) {
			return nil, nil, err
		}
		return v, m, err
	}
	m, merr := decodeMeta(ctx, e.storeFor(name), name, b, nil, e.log)
	if merr != nil {
		return nil, nil, merr
	}
	return v, m, err
}

// loadMeta is readMeta with the engine's store and logger.
func (e *Engine) loadMeta(ctx context.Context, name string) (*Meta, error) {
	return readMeta(ctx, e.storeFor(name), name, e.log)
}

// saveMeta replaces the metadata of name.
func (e *Engine) saveMeta(ctx context.Context, name string, m *Meta) error {
	b, err := e.encodeMeta(m)
	if err != nil {
		return err
	}
	defer e.status.forget(name)
	return e.storeFor(name).SaveState(ctx, name, b)
}

// encodeMeta encodes m as stored. In a fleet, whether a deploy is pending
// is each node's own (its deploy record), so the shared metadata does not
// say.
func (e *Engine) encodeMeta(m *Meta) ([]byte, error) {
	if e.coord != nil && m.PendingDeploy {
		cp := *m
		cp.PendingDeploy = false
		m = &cp
	}
	return m.encode()
}

// commit stores v as the new current version of name together with m, its
// metadata, in one step (store.Store.Commit): a crash leaves either the
// previous version with its metadata or v with m. If withID is not nil, it
// completes m with v's new version ID first.
func (e *Engine) commit(ctx context.Context, name string, v *store.Version, m *Meta, withID func(id string)) error {
	defer e.status.forget(name)
	return e.storeFor(name).CommitFunc(ctx, name, v, func(id string) ([]byte, error) {
		if withID != nil {
			withID(id)
		}
		return e.encodeMeta(m)
	})
}
