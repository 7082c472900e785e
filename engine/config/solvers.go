package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/acmehook/acmehook/acme"
)

// The challenge-choice rule and the solver-capability check. The engine
// asks ChallengeTypes which challenge to answer and CheckSolvers whether
// a certificate can be solved at all; `acmehook check` reports the same
// check for every certificate: there is no second copy of either.

// allowed reports whether a challenge type can validate id: wildcards
// only by dns-01 (RFC 8555 §7.1.3), IP addresses never by dns-01
// (RFC 8738 §7).
func allowed(id acme.Identifier, challenge string) bool {
	switch {
	case id.Wildcard():
		return challenge == acme.ChallengeDNS01
	case id.Type == acme.IdentifierIP:
		return challenge == acme.ChallengeHTTP01 || challenge == acme.ChallengeTLSALPN01
	}
	return true
}

func why(id acme.Identifier) string {
	if id.Wildcard() {
		return "wildcards need dns-01"
	}
	return "IP addresses need http-01 or tls-alpn-01"
}

// SolverFor returns the name of the plugin that solves id: the override in
// Solvers for the domain as written, else Solver.
func (cert *Certificate) SolverFor(id acme.Identifier) string {
	for d, s := range cert.Solvers {
		if acme.ParseIdentifier(d) == id {
			return s
		}
	}
	return cert.Solver
}

// Capabilities is what a solver plugin reports about itself (its Info
// RPC): the challenge types it can solve, in its order of preference.
type Capabilities struct {
	Challenges []string
}

// ChallengeTypes returns the challenge types usable for id with a solver
// that offers offered, best first: Challenge first when set, then the
// solver's own order; types the identifier cannot use are dropped. The
// engine intersects the result with what the CA offers in the
// authorization.
func (cert *Certificate) ChallengeTypes(id acme.Identifier, offered []string) []string {
	var out []string
	if cert.Challenge != "" {
		if slices.Contains(offered, cert.Challenge) && allowed(id, cert.Challenge) {
			out = append(out, cert.Challenge)
		}
		return out
	}
	for _, t := range offered {
		if allowed(id, t) && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// CheckSolverCapabilities checks, after the engine has asked each plugin
// for its capabilities and before any ACME request, that every identifier
// of every certificate has a solver able to validate it (see
// CheckSolvers). caps is keyed by plugin name. It returns every problem
// joined with errors.Join, in file order.
func (c *Config) CheckSolverCapabilities(caps map[string]Capabilities) error {
	var errs []error
	for _, cert := range c.Certificates {
		errs = append(errs, c.solverProblems(cert, caps)...)
	}
	sortByLine(errs)
	return errors.Join(errs...)
}

// CheckSolvers checks that every identifier of cert, one of c's
// certificates, has a solver able to validate it: a plugin present in caps
// (one that started and reported its capabilities), and a challenge type
// that both the plugin offers and the identifier allows (ChallengeTypes).
// It is the check `acmehook check` reports and `run` applies before it
// places an order. Each problem names the solver's key and line.
func (c *Config) CheckSolvers(cert *Certificate, caps map[string]Capabilities) error {
	return errors.Join(c.solverProblems(cert, caps)...)
}

func (c *Config) solverProblems(cert *Certificate, caps map[string]Capabilities) []error {
	var errs []error
	i := slices.Index(c.Certificates, cert)
	for j, id := range cert.Identifiers {
		solver := cert.SolverFor(id)
		path := fmt.Sprintf("certificate[%d].solver", i)
		if d := cert.Domains[domainIndex(cert, id, j)]; cert.Solvers[d] != "" {
			path = fmt.Sprintf("certificate[%d].solvers.%s", i, quoteSeg(d))
		}
		cp, ok := caps[solver]
		if !ok {
			errs = append(errs, c.errorf(path, "%s: plugin %q reported no capabilities", id.Value, solver))
			continue
		}
		if len(cert.ChallengeTypes(id, cp.Challenges)) > 0 {
			continue
		}
		offered := strings.Join(cp.Challenges, ", ")
		if offered == "" {
			offered = "none"
		}
		msg := fmt.Sprintf("%s cannot be validated by plugin %q, which offers %s (%s)", id.Value, solver, offered, why(id))
		if cert.Challenge != "" && allowed(id, cert.Challenge) {
			msg = fmt.Sprintf("%s: plugin %q does not offer challenge %s (it offers %s)", id.Value, solver, cert.Challenge, offered)
		}
		errs = append(errs, c.errorf(path, "%s", msg))
	}
	return errs
}

// domainIndex finds the entry of Domains that produced id.
func domainIndex(cert *Certificate, id acme.Identifier, hint int) int {
	if hint < len(cert.Domains) && acme.ParseIdentifier(cert.Domains[hint]) == id {
		return hint
	}
	for k, d := range cert.Domains {
		if acme.ParseIdentifier(d) == id {
			return k
		}
	}
	return 0
}
