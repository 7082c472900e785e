// Package event is the engine's event vocabulary: the lifecycle events a
// certificate goes through, the data each one carries, and the Hook
// interface the engine raises them through (modelled on certmagic's
// Config.OnEvent).
//
// The engine builds every event with the constructors of this package, and
// so does `acmehook script test` (Synthetic): what a script receives is
// defined once, here. The Lua host (engine/luahost) is one Hook; it turns
// an Event into a Lua table field by field.
//
// The package is a leaf: it imports the standard library and acme only.
package event

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// Type names a lifecycle event. Its value is the name scripts subscribe to
// (acmehook.on) and the name recorded in a certificate's stored events.
type Type string

// The events. ChallengeProvision is the only pre-event: a Hook's error
// vetoes the challenge. The others are post-events: an error cannot undo
// anything and is reported, and for issued and renew the deploy is retried
// by the next run. RunBegin and RunEnd are run-level (Type.RunLevel).
const (
	RunBegin           Type = "run-begin"
	ChallengeProvision Type = "challenge-provision"
	ChallengeCleanup   Type = "challenge-cleanup"
	Issued             Type = "issued"
	Renew              Type = "renew"
	Revoke             Type = "revoke"
	Failed             Type = "failed"
	UserActionRequired Type = "user-action-required"
	RenewalHeld        Type = "renewal-held"
	TOSChanged         Type = "tos-changed"
	RunEnd             Type = "run-end"
)

// Types lists every event in lifecycle order.
var Types = []Type{RunBegin, ChallengeProvision, ChallengeCleanup, Issued, Renew, Revoke, Failed, UserActionRequired, RenewalHeld, TOSChanged, RunEnd}

// Valid reports whether t is one of Types.
func (t Type) Valid() bool { return slices.Contains(Types, t) }

// Pre reports whether t is a pre-event, which a Hook may veto.
func (t Type) Pre() bool { return t == ChallengeProvision }

// RunLevel reports whether t is about a run as a whole rather than about
// one certificate (run-begin, run-end). A run-level event has no Cert and
// no Domains; its Run lists the certificates. The engine hands it once to
// each script, whatever number of certificates use that script.
// tos-changed, about the account, has no certificate either and reaches
// every script once, but it is not run-level: it has no Run.
func (t Type) RunLevel() bool { return t == RunBegin || t == RunEnd }

// Hook receives the engine's events.
//
// Handle MUST return by the time ctx is done. For a pre-event (Type.Pre) a
// non-nil error vetoes what the event announces: the challenge is not
// answered. For a post-event the error is reported (and the deploy of an
// issued or renew event is retried by the next run); it undoes nothing.
type Hook interface {
	Handle(ctx context.Context, ev Event) error
}

// Hooks is a Hook that hands every event to each of its hooks in turn. A
// pre-event stops at the first error (the veto); a post-event reaches
// every hook and the errors are joined.
type Hooks []Hook

// Handle implements Hook.
func (hs Hooks) Handle(ctx context.Context, ev Event) error {
	var errs []error
	for _, h := range hs {
		err := h.Handle(ctx, ev)
		if err == nil {
			continue
		}
		if ev.Type.Pre() {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Event is the data of one lifecycle event. Zero-valued fields are absent:
// each constructor fills exactly the fields of its event. The Lua key of
// each field is given beside it.
type Event struct {
	Type    Type     // name
	Cert    string   // cert_name: the certificate's name in the configuration
	Domains []string // domains: its identifiers (DNS names and IP addresses) as configured

	// The certificate the event is about (issued, renew, revoke), or the
	// one still in service (failed).
	Serial         string    // serial: lowercase hex
	Issuer         string    // issuer: the issuer's distinguished name
	NotBefore      time.Time // not_before
	NotAfter       time.Time // not_after
	Profile        string    // profile: the ACME profile it was ordered with, if any
	PreviousSerial string    // previous_serial: on renew, the certificate it replaces

	// Files of the certificate in the storage, and their PEM texts. The
	// private key is only ever passed as a path.
	CertPath      string // cert_path
	KeyPath       string // key_path; empty once the key was moved aside
	ChainPath     string // chain_path
	FullchainPath string // fullchain_path
	CertPEM       string // cert_pem
	ChainPEM      string // chain_pem: the issuer certificates, leaf's issuer first
	FullchainPEM  string // fullchain_pem

	// RevocationReason is the RFC 5280 §5.3.1 reason code of a revoke
	// event.
	RevocationReason int // revocation_reason

	// A renewal-held event says until when the order is held back and
	// why, and whether the certificate in service expires first.
	HeldUntil             time.Time // held_until
	HoldReason            string    // hold_reason
	ExpiresBeforeHoldEnds bool      // expires_before_hold_ends

	// A tos-changed event names the CA's directory and account, the terms
	// the directory names now and those the account agreed to, and
	// whether acmehook agreed to the new ones (ca.agree_tos_changes).
	Directory              string // directory
	AccountURL             string // account_url
	TermsOfService         string // terms_of_service
	PreviousTermsOfService string // previous_terms_of_service
	Agreed                 bool   // agreed

	Error     *Error     // error: on failed and user-action-required
	Challenge *Challenge // challenge: on the challenge events
	// Run is the run of a run-level event; its fields are top-level keys
	// in Lua (certificates, issued, ...).
	Run *Run

	// Test marks an event made up by `acmehook script test` (Synthetic).
	Test bool // test
	// DryRun marks an event of a dry run, which changes nothing.
	DryRun bool // dry_run
}

// Error is why a failed event failed: the error's text and, when the CA
// reported one, its ACME problem document (RFC 8555 §6.7).
type Error struct {
	Message         string // message
	ProblemType     string // problem_type, e.g. "urn:ietf:params:acme:error:rateLimited"
	ProblemDetail   string // problem_detail
	ProblemInstance string // problem_instance: a URL with more about this occurrence
}

// Run is what a run-level event says about its run: the certificates the
// run looks at (those the receiving script is attached to) and, on
// run-end, their names by outcome. A certificate can be in several lists:
// one issued or renewed whose deploy failed is also in Failed, one issued
// and deployed in Deployed.
type Run struct {
	Started      time.Time        // started_at
	Certificates []RunCertificate // certificates
	Issued       []string         // issued: on run-end, certificates issued for the first time
	Renewed      []string         // renewed: on run-end, certificates renewed
	Deployed     []string         // deployed: on run-end, certificates whose deploy succeeded in this run (issued, renewed or a pending deploy retried)
	Failed       []string         // failed: on run-end, certificates with an error (a failed order or a failed deploy)
	Held         []string         // held: on run-end, certificates whose order the backoff or the reissue guard held back
}

// RunCertificate is one certificate of a run.
type RunCertificate struct {
	Cert    string   // cert_name
	Domains []string // domains
	// Action is, on run-begin, what the run is about to do: "issue",
	// "renew", "redeploy", "hold" or "none"; on run-end what it did:
	// "issued", "renewed", "deployed", "failed", "held" or "none".
	Action   string    // action
	Reason   string    // reason: why, in one line
	Serial   string    // serial: of the certificate in service (after the run, on run-end)
	NotAfter time.Time // not_after
	Deployed bool      // deployed: on run-end, its deploy succeeded in this run
	Error    string    // error: on run-end, why it failed
}

// Challenge is the challenge a challenge event is about (RFC 8555 §8).
type Challenge struct {
	Type             string // type: "http-01", "dns-01", "tls-alpn-01"
	Identifier       string // identifier: the name being validated, "*." included for a wildcard
	Token            string // token
	KeyAuthorization string // key_authorization (RFC 8555 §8.1)
	DNSName          string // dns_name: "_acme-challenge.<domain>." for dns-01
	DNSValue         string // dns_value: the TXT record value for dns-01
}

// Certificate is a stored certificate as events describe it.
type Certificate struct {
	Serial    string // lowercase hex
	Issuer    string // distinguished name
	NotBefore time.Time
	NotAfter  time.Time
	Profile   string
	CertPEM   string
	ChainPEM  string
	// Paths of its files; empty for a storage that keeps no files. An
	// empty KeyPath says the key is not available (moved aside).
	CertPath, KeyPath, ChainPath, FullchainPath string
}

func (ev *Event) setCertificate(c Certificate) {
	ev.Serial, ev.Issuer, ev.Profile = c.Serial, c.Issuer, c.Profile
	ev.NotBefore, ev.NotAfter = c.NotBefore, c.NotAfter
	ev.CertPEM, ev.ChainPEM, ev.FullchainPEM = c.CertPEM, c.ChainPEM, c.CertPEM+c.ChainPEM
	ev.CertPath, ev.KeyPath, ev.ChainPath, ev.FullchainPath = c.CertPath, c.KeyPath, c.ChainPath, c.FullchainPath
}

// NewIssued is the issued event: certificate name's first certificate,
// c, was stored.
func NewIssued(name string, domains []string, c Certificate) Event {
	ev := Event{Type: Issued, Cert: name, Domains: domains}
	ev.setCertificate(c)
	return ev
}

// NewRenew is the renew event: c replaced the certificate whose serial is
// previousSerial.
func NewRenew(name string, domains []string, c Certificate, previousSerial string) Event {
	ev := Event{Type: Renew, Cert: name, Domains: domains, PreviousSerial: previousSerial}
	ev.setCertificate(c)
	return ev
}

// NewRevoke is the revoke event: the CA revoked c for reason (RFC 5280
// §5.3.1).
func NewRevoke(name string, domains []string, c Certificate, reason int) Event {
	ev := Event{Type: Revoke, Cert: name, Domains: domains, RevocationReason: reason}
	ev.setCertificate(c)
	return ev
}

// NewFailed is the failed event for err: its text and the ACME problem in
// its chain, if any. current, when not nil, is the certificate still in
// service (a renewal failed), so a handler can say how long it has left.
func NewFailed(name string, domains []string, current *Certificate, err error) Event {
	ev := Event{Type: Failed, Cert: name, Domains: domains}
	if current != nil {
		ev.setCertificate(*current)
	}
	ev.Error = &Error{Message: err.Error()}
	var p *acme.Problem
	if errors.As(err, &p) {
		ev.Error.ProblemType, ev.Error.ProblemDetail, ev.Error.ProblemInstance = p.Type, p.Detail, p.Instance
	}
	return ev
}

// NewUserActionRequired is the user-action-required event: the CA
// answered certificate name's order with a userActionRequired problem
// (RFC 8555 §6.7: a person must visit the problem's instance URL, for
// example to agree to new terms, §7.3.3), err. Its fields are those of
// NewFailed; the failed event follows it.
func NewUserActionRequired(name string, domains []string, current *Certificate, err error) Event {
	ev := NewFailed(name, domains, current, err)
	ev.Type = UserActionRequired
	return ev
}

// NewRenewalHeld is the renewal-held event: certificate name needs a new
// certificate (its renewal time has passed, or it has none, or its
// configuration changed) but the failure backoff or the reissue guard
// holds the order back until until, for reason. current, when not nil, is
// the certificate in service; ExpiresBeforeHoldEnds is set when it
// expires before until.
func NewRenewalHeld(name string, domains []string, current *Certificate, reason string, until time.Time) Event {
	ev := Event{Type: RenewalHeld, Cert: name, Domains: domains, HeldUntil: until, HoldReason: reason}
	if current != nil {
		ev.setCertificate(*current)
		ev.ExpiresBeforeHoldEnds = !current.NotAfter.After(until)
	}
	return ev
}

// NewTOSChanged is the tos-changed event: the directory of the CA at
// directory names terms of service (terms) other than those the account
// at accountURL agreed to (previous, empty when it agreed to none).
// agreed says that acmehook agreed to terms (ca.agree_tos_changes).
func NewTOSChanged(directory, accountURL, terms, previous string, agreed bool) Event {
	return Event{Type: TOSChanged, Directory: directory, AccountURL: accountURL, TermsOfService: terms, PreviousTermsOfService: previous, Agreed: agreed}
}

// NewChallenge is a challenge event, t being ChallengeProvision or
// ChallengeCleanup, for challenge ch of certificate name.
func NewChallenge(t Type, name string, domains []string, ch Challenge) Event {
	return Event{Type: t, Cert: name, Domains: domains, Challenge: &ch}
}

// NewRunBegin is the run-begin event of a run started at started that
// looks at certs (Action: what it will do with each).
func NewRunBegin(started time.Time, certs []RunCertificate) Event {
	return Event{Type: RunBegin, Run: &Run{Started: started, Certificates: certs}}
}

// NewRunEnd is the run-end event of a run started at started: certs are
// its certificates with what it did (Action, Deployed, Error), and the
// name lists are made from them. The lists are never nil.
func NewRunEnd(started time.Time, certs []RunCertificate) Event {
	r := &Run{Started: started, Certificates: certs,
		Issued: []string{}, Renewed: []string{}, Deployed: []string{}, Failed: []string{}, Held: []string{}}
	for _, c := range certs {
		switch c.Action {
		case "issued":
			r.Issued = append(r.Issued, c.Cert)
		case "renewed":
			r.Renewed = append(r.Renewed, c.Cert)
		case "held":
			r.Held = append(r.Held, c.Cert)
		}
		if c.Deployed {
			r.Deployed = append(r.Deployed, c.Cert)
		}
		if c.Error != "" {
			r.Failed = append(r.Failed, c.Cert)
		}
	}
	return Event{Type: RunEnd, Run: r}
}
