package engine

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/store"
)

// ErrRevocationReason is wrapped by ParseRevocationReason's errors.
var ErrRevocationReason = errors.New("engine: unknown revocation reason")

type reasonName struct {
	name string
	code int
}

// revocationReasons names the reason codes of RFC 5280 §5.3.1 as the
// command line accepts them.
var revocationReasons = []reasonName{
	{"unspecified", acme.ReasonUnspecified},
	{"keyCompromise", acme.ReasonKeyCompromise},
	{"cACompromise", acme.ReasonCACompromise},
	{"affiliationChanged", acme.ReasonAffiliationChanged},
	{"superseded", acme.ReasonSuperseded},
	{"cessationOfOperation", acme.ReasonCessationOfOperation},
	{"certificateHold", acme.ReasonCertificateHold},
	{"removeFromCRL", acme.ReasonRemoveFromCRL},
	{"privilegeWithdrawn", acme.ReasonPrivilegeWithdrawn},
	{"aACompromise", acme.ReasonAACompromise},
}

// ParseRevocationReason returns the RFC 5280 §5.3.1 code of a reason
// name ("keyCompromise", matched without regard to case) or number ("1").
func ParseRevocationReason(s string) (int, error) {
	for _, r := range revocationReasons {
		if strings.EqualFold(s, r.name) || s == strconv.Itoa(r.code) {
			return r.code, nil
		}
	}
	return 0, fmt.Errorf("%w %q; use one of %s", ErrRevocationReason, s, strings.Join(RevocationReasonNames(), ", "))
}

// RevocationReasonName returns the name of a reason code, or the number.
func RevocationReasonName(code int) string {
	i := slices.IndexFunc(revocationReasons, func(r reasonName) bool { return r.code == code })
	if i < 0 {
		return strconv.Itoa(code)
	}
	return revocationReasons[i].name
}

// RevocationReasonNames lists the reason names in code order.
func RevocationReasonNames() []string {
	out := make([]string, len(revocationReasons))
	for i, r := range revocationReasons {
		out[i] = r.name
	}
	return out
}

// RevokeOptions select how Revoke revokes.
type RevokeOptions struct {
	// Reason is the RFC 5280 §5.3.1 reason code (ParseRevocationReason).
	Reason int
	// WithCertKey signs the request with the certificate's own key instead
	// of the account key (RFC 8555 §7.6), for a certificate whose account
	// is lost. It needs the key, so it is impossible once the key was
	// moved aside.
	WithCertKey bool
}

// RevokeResult says what Revoke did.
type RevokeResult struct {
	Serial string
	// Revoked reports that the CA revoked the certificate (or had already
	// revoked it), even if a later step failed.
	Revoked bool
	// AlreadyRevoked reports that the CA answered alreadyRevoked; the
	// certificate is treated as revoked all the same.
	AlreadyRevoked bool
	// KeyMovedTo is where the key went for keyCompromise.
	KeyMovedTo string
}

// Revoke revokes the current certificate of name at the CA (RFC 8555
// §7.6), then records it as revoked so the next run or daemon check
// replaces it at once, moves its key aside for keyCompromise so it is
// never used again (not even with reuse_key), and raises revoke, with the
// reason, to the certificate's scripts. A script failure is returned after
// everything else is done: the revocation stands.
func (e *Engine) Revoke(ctx context.Context, name string, opts RevokeOptions) (RevokeResult, error) {
	var res RevokeResult
	cert := e.cfg.Certificate(name)
	if cert == nil {
		return res, fmt.Errorf("%w: %q", ErrUnknownCertificate, name)
	}
	if e.coord != nil {
		// In a fleet, under the certificate's lock, as its owner would.
		_, release, err := e.claim(ctx, name)
		if err != nil {
			return res, fmt.Errorf("revoking %s: %w", name, err)
		}
		defer release()
	}
	v, err := e.store.LoadCertificate(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return res, fmt.Errorf("%s has no certificate to revoke (none was issued yet): %w", name, store.ErrNotFound)
	case err != nil && !(errors.Is(err, store.ErrKeyMovedAside) && !opts.WithCertKey):
		return res, err // it says "loading certificate <name>"
	}
	res.Serial = v.Info.Serial
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		return res, err
	}
	log := e.log.With("cert", name, "serial", v.Info.Serial, "reason", RevocationReasonName(opts.Reason))
	var key crypto.Signer
	if opts.WithCertKey {
		if key, err = parseKeyPEM(v.KeyPEM); err != nil {
			return res, fmt.Errorf("loading the key of %s: %w", name, err)
		}
	}
	// The revocation is recorded before the CA is asked, and a compromised
	// key moved aside, so that a crash after the CA revoked the
	// certificate still has the next run replace it (with a new key). A
	// refusal from the CA undoes the record; a compromised key stays
	// aside (the certificate is then replaced by the next run, which is
	// what its owner wants).
	meta, err := e.loadMeta(ctx, name)
	if err != nil {
		return res, fmt.Errorf("loading the metadata of %s: %w", name, err)
	}
	before := meta.Renewal
	meta.Renewal.RecordRevoked(e.now())
	if err := e.saveMeta(ctx, name, meta); err != nil {
		return res, fmt.Errorf("recording the revocation of %s: %w", name, err)
	}
	if opts.Reason == acme.ReasonKeyCompromise && v.KeyPEM != nil {
		res.KeyMovedTo, err = e.storeFor(name).MoveKeyAside(ctx, name)
		e.status.forget(name)
		if err != nil {
			return res, fmt.Errorf("moving the key of %s aside: %w", name, err)
		}
	}
	if opts.WithCertKey {
		err = e.client.RevokeCertificateWithKey(ctx, key, leaf.Raw, opts.Reason)
	} else {
		_, err = e.withAccount(ctx, func(acct acme.Account) error {
			return e.client.RevokeCertificate(ctx, acct, leaf.Raw, opts.Reason)
		})
	}
	if p := problemOf(err); p != nil && p.Type == acme.ProblemAlreadyRevoked {
		log.Warn("the CA says the certificate was already revoked", "detail", p.Detail)
		res.AlreadyRevoked, err = true, nil
	}
	// Recorded without the caller's cancellation: the revocation happened
	// (or the CA refused it).
	sctx := context.WithoutCancel(ctx)
	if err != nil {
		if problemOf(err) != nil { // the CA answered: not revoked
			meta.Renewal = before
			if serr := e.saveMeta(sctx, name, meta); serr != nil {
				err = errors.Join(err, fmt.Errorf("undoing the record of the revocation: %w", serr))
			}
		}
		return res, fmt.Errorf("revoking %s (serial %s): %w", name, v.Info.Serial, err)
	}
	res.Revoked = true
	log.Info("certificate revoked")

	ev := MetaEvent{Time: e.now(), Name: string(event.Revoke), Result: "ok", Version: v.ID, Detail: "reason " + RevocationReasonName(opts.Reason)}
	c := e.eventCertificate(cert, v, leaf)
	if res.KeyMovedTo != "" {
		c.KeyPath = "" // no longer there
	}
	serr := e.raise(sctx, cert, event.NewRevoke(cert.Name, domains(cert), c, opts.Reason))
	if serr != nil {
		ev.Result, ev.Detail = "error", ev.Detail+": "+serr.Error()
	}
	meta.Events = append(meta.Events, ev)
	if err := e.saveMeta(sctx, name, meta); err != nil {
		return res, fmt.Errorf("revoked %s, but saving its metadata: %w", name, err)
	}
	if serr != nil {
		return res, fmt.Errorf("revoked %s, but %w", name, serr)
	}
	return res, nil
}
