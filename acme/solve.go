package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Task is one challenge to make answerable: what a Solver's Present and
// CleanUp receive. Every value a solver needs can be derived from it: the
// dns-01 record name (DNS01TXTRecordName(Authorization.Identifier.Value))
// and value (DNS01TXTRecord(KeyAuthorization)), the http-01 path
// (HTTP01ChallengePath(Challenge.Token)), the tls-alpn-01 certificate
// (TLSALPN01ChallengeCert(Authorization.Identifier, KeyAuthorization)).
type Task struct {
	// Authorization is the authorization as fetched (RFC 8555 §7.1.4):
	// its identifier (without "*." for a wildcard, which Wildcard marks),
	// its URL, status and offered challenges.
	Authorization Authorization
	// Challenge is the challenge chosen among the offered ones. Its token
	// has been validated (ValidateToken).
	Challenge Challenge
	// KeyAuthorization is the challenge's key authorization, RFC 8555 §8.1.
	// It is a secret of sorts: log it at Debug only.
	KeyAuthorization string
}

// Identifier returns the identifier the authorization is for as it was
// ordered: a wildcard as "*.example.com".
func (t Task) Identifier() Identifier { return authzIdentifier(t.Authorization) }

// Solver makes challenges answerable for the flow of
// Client.SolveAuthorizations and Client.ObtainCertificate (in the manner of
// acmez's solvers). The flow calls it concurrently for the authorizations
// of one order; an implementation MUST be safe for concurrent use.
type Solver interface {
	// ChallengeTypes returns the challenge types (ChallengeDNS01, ...) the
	// solver can answer for id, most preferred first. id is the
	// identifier as ordered: a wildcard is "*.example.com"
	// (id.Wildcard() reports it), so a solver that cannot answer dns-01
	// MUST NOT offer anything for it. The flow answers the first type in
	// this list that the CA offers. An empty list, or an error, means the
	// solver cannot solve id; the error is returned to the caller as is.
	ChallengeTypes(ctx context.Context, id Identifier) ([]string, error)
	// Present makes t.Challenge answerable. When it returns nil the CA
	// MAY validate at once, so it MUST return only when the response is
	// in place (propagation waits and self-checks included). It SHOULD
	// honour ctx.
	Present(ctx context.Context, t Task) error
	// CleanUp removes what Present set up. It is called exactly once
	// after every call to Present, whatever Present returned and whatever
	// happened afterwards, with a context that survives the cancellation
	// of the caller's and is bounded by CleanUpTimeout. Its error is
	// logged, not returned: the authorization's outcome stands.
	CleanUp(ctx context.Context, t Task) error
}

// WaitObserver may be implemented by a Solver that reports progress (such
// as a periodic "waiting for validation" log line).
type WaitObserver interface {
	// Waiting is called when the flow has answered t's challenge and
	// starts polling its authorization. The function it returns is called
	// once, when polling ends, before CleanUp.
	Waiting(t Task) (done func())
}

// CleanUpTimeout bounds each Solver.CleanUp call of the flow.
const CleanUpTimeout = time.Minute

// ErrNoChallenge is matched (errors.Is) by a *NoChallengeError.
var ErrNoChallenge = errors.New("acme: no challenge the solver can answer")

// ErrIdentifierMismatch is wrapped when the CA hands back an order whose
// identifiers are not the ones requested, or an authorization for an
// identifier the order did not request (checked before any solver is
// called).
var ErrIdentifierMismatch = errors.New("acme: identifiers differ from the request")

// NoChallengeError says that none of the challenges an authorization
// offers is one the solver can answer.
type NoChallengeError struct {
	// Identifier as ordered ("*.example.com" for a wildcard).
	Identifier Identifier
	// Offered are the challenge types the CA offers, Supported those the
	// solver answers for the identifier.
	Offered, Supported []string
}

// Error names what the CA offers and what the solver answers.
func (e *NoChallengeError) Error() string {
	return fmt.Sprintf("acme: no challenge the solver can answer for %s: the CA offers %v, the solver answers %v", e.Identifier, e.Offered, e.Supported)
}

// Is matches ErrNoChallenge.
func (e *NoChallengeError) Is(target error) bool { return target == ErrNoChallenge }

// SolveAuthorizations solves every authorization of order concurrently
// (RFC 8555 §7.5, §7.5.1) with solver, and returns when all have ended.
// For each authorization it: fetches it; skips it when it is already
// valid; refuses it (ErrIdentifierMismatch) when its identifier is not
// one of order.Identifiers, before the solver sees it; chooses the first
// challenge type the solver prefers that the CA offers (else a
// *NoChallengeError); validates the token and derives the key
// authorization; calls Present; answers the challenge; polls the
// authorization (bounded as WaitAuthorization is); and calls CleanUp,
// which follows every Present. order.Identifiers must be the identifiers
// requested (NewOrder checks that the CA's order holds exactly those).
//
// Invalid authorizations are reported together as one *ValidationError;
// a poll that ran out of time is a *PollError. Every failure is returned,
// joined.
func (c *Client) SolveAuthorizations(ctx context.Context, acct Account, order Order, solver Solver) error {
	if _, err := accountSigner(acct); err != nil {
		return err
	}
	if solver == nil {
		return errors.New("acme: solving authorizations: no solver")
	}
	want := map[string]bool{}
	for _, id := range order.Identifiers {
		want[identifierKey(id)] = true
	}
	errs := make([]error, len(order.Authorizations))
	var wg sync.WaitGroup
	for i, u := range order.Authorizations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.solveOne(ctx, acct, u, want, solver)
		}()
	}
	wg.Wait()
	return joinSolveErrors(errs)
}

// joinSolveErrors merges the *ValidationErrors among errs into one, first,
// and joins the rest after it.
func joinSolveErrors(errs []error) error {
	var verr *ValidationError
	var rest []error
	for _, err := range errs {
		var ve *ValidationError
		switch {
		case err == nil:
		case errors.As(err, &ve) && errors.Is(err, ve): // the error is the ValidationError itself
			if verr == nil {
				verr = &ValidationError{}
			}
			verr.Authorizations = append(verr.Authorizations, ve.Authorizations...)
		default:
			rest = append(rest, err)
		}
	}
	if verr != nil {
		rest = append([]error{verr}, rest...)
	}
	return errors.Join(rest...)
}

// solveOne runs the chain for the authorization at url.
func (c *Client) solveOne(ctx context.Context, acct Account, url string, want map[string]bool, solver Solver) (err error) {
	authz, err := c.GetAuthorization(ctx, acct, url)
	if err != nil {
		return err // it names the URL
	}
	id := authzIdentifier(authz)
	if !want[identifierKey(id)] {
		return fmt.Errorf("authorization %s is for %s, which the order did not request: %w", url, id, ErrIdentifierMismatch)
	}
	switch authz.Status {
	case StatusValid:
		c.logger().Debug("acme authorization already valid", "identifier", id.Value)
		return nil
	case StatusPending:
	case StatusInvalid:
		return &ValidationError{Authorizations: []Authorization{authz}}
	default:
		return fmt.Errorf("authorization %s for %s is %s", url, id, authz.Status)
	}
	types, err := solver.ChallengeTypes(ctx, id)
	if err != nil {
		return err
	}
	ch, ok := chooseChallenge(authz, types)
	if !ok {
		offered := make([]string, len(authz.Challenges))
		for i, ch := range authz.Challenges {
			offered[i] = ch.Type
		}
		return &NoChallengeError{Identifier: id, Offered: offered, Supported: types}
	}
	keyAuth, err := KeyAuthorization(ch.Token, acct.Key.Public())
	if err != nil {
		return fmt.Errorf("preparing %s challenge for %s: %w", ch.Type, id, err)
	}
	t := Task{Authorization: authz, Challenge: ch, KeyAuthorization: keyAuth}
	log := c.logger().With("identifier", id.Value, "challenge", ch.Type)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CleanUpTimeout)
		defer cancel()
		if cerr := solver.CleanUp(cctx, t); cerr != nil {
			log.Warn("acme challenge cleanup failed", "error", cerr)
		}
	}()
	if err := solver.Present(ctx, t); err != nil {
		return fmt.Errorf("presenting %s for %s: %w", ch.Type, id, err)
	}
	if _, err := c.AcceptChallenge(ctx, acct, ch); err != nil {
		return fmt.Errorf("answering %s for %s: %w", ch.Type, id, err)
	}
	if w, ok := solver.(WaitObserver); ok {
		done := w.Waiting(t)
		defer done()
	}
	log.Debug("acme waiting for validation")
	if _, err := c.WaitAuthorization(ctx, acct, url); err != nil {
		var pe *PollError
		if errors.As(err, &pe) && pe.Status == "" { // no poll answered
			pe.Identifier, pe.Status = id, authz.Status
		}
		return err // a *ValidationError or *PollError naming the identifier
	}
	log.Debug("acme identifier validated")
	return nil
}

// chooseChallenge returns the first challenge of types, in that order,
// the authorization offers.
func chooseChallenge(authz Authorization, types []string) (Challenge, bool) {
	for _, t := range types {
		if ch, ok := authz.Challenge(t); ok {
			return ch, true
		}
	}
	return Challenge{}, false
}

// authzIdentifier returns the identifier of authz as ordered: "*." in
// front of a wildcard's name.
func authzIdentifier(authz Authorization) Identifier {
	id := authz.Identifier
	if authz.Wildcard && !strings.HasPrefix(id.Value, "*.") {
		id.Value = "*." + id.Value
	}
	return id
}

// identifierKey returns a canonical form of id for comparisons: DNS names
// lowercased without a trailing dot, IP addresses in their canonical
// text form.
func identifierKey(id Identifier) string {
	switch id.Type {
	case IdentifierDNS:
		return id.Type + ":" + strings.ToLower(strings.TrimSuffix(id.Value, "."))
	case IdentifierIP:
		if a, err := netip.ParseAddr(id.Value); err == nil {
			return id.Type + ":" + a.Unmap().String()
		}
	}
	return id.Type + ":" + id.Value
}

// checkOrderIdentifiers checks that got holds exactly the identifiers of
// want (RFC 8555 §7.4: the order the CA creates is for the identifiers
// requested), in any order.
func checkOrderIdentifiers(want, got []Identifier) error {
	count := map[string]int{}
	for _, id := range want {
		count[identifierKey(id)]++
	}
	var extra []string
	for _, id := range got {
		k := identifierKey(id)
		if count[k] == 0 {
			extra = append(extra, id.Value)
			continue
		}
		count[k]--
	}
	var missing []string
	for _, id := range want {
		k := identifierKey(id)
		if count[k] > 0 {
			count[k]--
			missing = append(missing, id.Value)
		}
	}
	if len(extra) == 0 && len(missing) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		parts = append(parts, "not requested "+strings.Join(extra, ", "))
	}
	return fmt.Errorf("%w: the order's identifiers are %s (%s)", ErrIdentifierMismatch, identifierList(got), strings.Join(parts, "; "))
}

func identifierList(ids []Identifier) string {
	vs := make([]string, len(ids))
	for i, id := range ids {
		vs[i] = id.Value
	}
	return "[" + strings.Join(vs, " ") + "]"
}

// ValidationError reports authorizations the CA found invalid (RFC 8555
// §7.5.1), like acme-python's ValidationError: which identifiers failed,
// with each challenge's problem.
type ValidationError struct {
	// Authorizations are the invalid authorizations as last fetched; the
	// failed challenges carry their Error.
	Authorizations []Authorization
}

// Error lists each failed identifier with its challenges' problems.
func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("acme: validation failed")
	for i, a := range e.Authorizations {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s is %s", authzIdentifier(a), a.Status)
		for _, ch := range a.Challenges {
			if ch.Error != nil {
				fmt.Fprintf(&b, ": %s: %s", ch.Type, problemText(ch.Error))
			}
		}
	}
	return b.String()
}

// Unwrap returns the challenges' problems, so errors.As finds a *Problem.
func (e *ValidationError) Unwrap() []error {
	var out []error
	for _, a := range e.Authorizations {
		for _, ch := range a.Challenges {
			if ch.Error != nil {
				out = append(out, ch.Error)
			}
		}
	}
	return out
}

// Identifiers returns the identifiers that failed, as ordered.
func (e *ValidationError) Identifiers() []Identifier {
	out := make([]Identifier, len(e.Authorizations))
	for i, a := range e.Authorizations {
		out[i] = authzIdentifier(a)
	}
	return out
}

// problemText is a problem without the "acme: " prefix, for messages that
// already carry it.
func problemText(p *Problem) string {
	return strings.TrimPrefix(p.Error(), "acme: ")
}

// CertificateRequest is what ObtainCertificate orders.
type CertificateRequest struct {
	// Identifiers to order (dns, ip; wildcards as "*.example.com").
	Identifiers []Identifier
	// Key is the certificate's key; it MUST NOT be the account key.
	Key crypto.Signer
	// Profile, NotBefore, NotAfter and Replaces are the optional order
	// fields (see NewOrder).
	Profile             string
	NotBefore, NotAfter time.Time
	Replaces            string
	// PreferredChain is the issuer common name of the root the chain
	// should lead to (see FetchPreferredChain); "" takes the default.
	PreferredChain string
	// Roots, when not nil, are the roots the chain must verify to (see
	// VerifyCertificate).
	Roots *x509.CertPool
	// Solver answers the challenges.
	Solver Solver
}

// IssuedCertificate is the outcome of ObtainCertificate.
type IssuedCertificate struct {
	// Order is the order, valid, with its certificate URL.
	Order Order
	// Chain is the downloaded (preferred) chain, verified.
	Chain CertificateChain
}

// ObtainCertificate runs a whole issuance (RFC 8555 §7.4 to §7.4.2) with
// acct: it creates the order (NewOrder, which checks the CA's identifiers),
// solves its authorizations (SolveAuthorizations), finalizes it with a CSR
// for req.Key (FinalizeOrder), downloads the preferred chain
// (FetchPreferredChain) and verifies it (VerifyCertificate: the
// requested names, the key, the validity, the chain's signatures and, with
// req.Roots, the roots; as of req.NotBefore when that is later than now).
// Each wait is bounded as the method it is made of.
func (c *Client) ObtainCertificate(ctx context.Context, acct Account, req CertificateRequest) (IssuedCertificate, error) {
	// Refuse what would fail later before an order is spent on it.
	switch {
	case req.Key == nil:
		return IssuedCertificate{}, errors.New("acme: obtaining certificate: no certificate key")
	case req.Solver == nil:
		return IssuedCertificate{}, errors.New("acme: obtaining certificate: no solver")
	case acct.Key != nil && samePublicKey(req.Key.Public(), acct.Key.Public()):
		return IssuedCertificate{}, fmt.Errorf("obtaining certificate: %w", ErrCertKeyIsAccountKey)
	}
	o, err := c.NewOrder(ctx, acct, Order{
		Identifiers: slices.Clone(req.Identifiers),
		Profile:     req.Profile,
		NotBefore:   req.NotBefore,
		NotAfter:    req.NotAfter,
		Replaces:    req.Replaces,
	})
	if err != nil {
		return IssuedCertificate{}, err
	}
	if err := c.SolveAuthorizations(ctx, acct, o, req.Solver); err != nil {
		return IssuedCertificate{}, err
	}
	csr, err := NewCSR(req.Key, req.Identifiers)
	if err != nil {
		return IssuedCertificate{}, err
	}
	o, err = c.FinalizeOrder(ctx, acct, o, csr)
	if err != nil {
		return IssuedCertificate{}, err
	}
	chain, err := c.FetchPreferredChain(ctx, acct, o.Certificate, req.PreferredChain)
	if err != nil {
		return IssuedCertificate{}, err
	}
	// A certificate asked to start later is checked as of its start.
	now := time.Now()
	if req.NotBefore.After(now) {
		now = req.NotBefore
	}
	if err := VerifyCertificate(chain.Certificates, req.Key.Public(), req.Identifiers, now, req.Roots); err != nil {
		return IssuedCertificate{}, fmt.Errorf("verifying certificate %s: %w", chain.URL, err)
	}
	return IssuedCertificate{Order: o, Chain: chain}, nil
}
