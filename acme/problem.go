package acme

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Problem types defined by RFC 8555 §6.7 and its extensions. They are the
// full URNs a server sends in a problem document's "type" field.
const (
	ProblemAccountDoesNotExist     = "urn:ietf:params:acme:error:accountDoesNotExist"
	ProblemAlreadyRevoked          = "urn:ietf:params:acme:error:alreadyRevoked"
	ProblemBadCSR                  = "urn:ietf:params:acme:error:badCSR"
	ProblemBadNonce                = "urn:ietf:params:acme:error:badNonce"
	ProblemBadPublicKey            = "urn:ietf:params:acme:error:badPublicKey"
	ProblemBadRevocationReason     = "urn:ietf:params:acme:error:badRevocationReason"
	ProblemBadSignatureAlgorithm   = "urn:ietf:params:acme:error:badSignatureAlgorithm"
	ProblemCAA                     = "urn:ietf:params:acme:error:caa"
	ProblemCompound                = "urn:ietf:params:acme:error:compound"
	ProblemConnection              = "urn:ietf:params:acme:error:connection"
	ProblemDNS                     = "urn:ietf:params:acme:error:dns"
	ProblemExternalAccountRequired = "urn:ietf:params:acme:error:externalAccountRequired"
	ProblemIncorrectResponse       = "urn:ietf:params:acme:error:incorrectResponse"
	ProblemInvalidContact          = "urn:ietf:params:acme:error:invalidContact"
	ProblemMalformed               = "urn:ietf:params:acme:error:malformed"
	ProblemOrderNotReady           = "urn:ietf:params:acme:error:orderNotReady"
	ProblemRateLimited             = "urn:ietf:params:acme:error:rateLimited"
	ProblemRejectedIdentifier      = "urn:ietf:params:acme:error:rejectedIdentifier"
	ProblemServerInternal          = "urn:ietf:params:acme:error:serverInternal"
	ProblemTLS                     = "urn:ietf:params:acme:error:tls"
	ProblemUnauthorized            = "urn:ietf:params:acme:error:unauthorized"
	ProblemUnsupportedContact      = "urn:ietf:params:acme:error:unsupportedContact"
	ProblemUnsupportedIdentifier   = "urn:ietf:params:acme:error:unsupportedIdentifier"
	ProblemUserActionRequired      = "urn:ietf:params:acme:error:userActionRequired"
	// ProblemAlreadyReplaced is RFC 9773 §7.4: the certificate named in an
	// order's "replaces" field was already replaced.
	ProblemAlreadyReplaced = "urn:ietf:params:acme:error:alreadyReplaced"
	// ProblemInvalidProfile is draft-ietf-acme-profiles: the requested
	// profile is not offered.
	ProblemInvalidProfile = "urn:ietf:params:acme:error:invalidProfile"
)

// Problem is an RFC 7807 problem document as ACME uses it (RFC 8555 §6.7).
// Every error the server reports is returned as a *Problem, possibly
// wrapped; use errors.As to get it.
type Problem struct {
	Type     string `json:"type,omitempty"`
	Title    string `json:"title,omitempty"`
	Status   int    `json:"status,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Subproblems lists per-identifier problems (RFC 8555 §6.7.1).
	Subproblems []Problem `json:"subproblems,omitempty"`
	// Identifier is set on subproblems.
	Identifier *Identifier `json:"identifier,omitempty"`
	// Algorithms lists the JWS algorithms the server accepts; servers send
	// it with badSignatureAlgorithm (RFC 8555 §6.2). When a server only
	// names them in Detail (Pebble does), they are recovered from there.
	Algorithms []string `json:"algorithms,omitempty"`

	// RetryAfter is the server's Retry-After, zero if it sent none. Not on
	// the wire.
	RetryAfter time.Duration `json:"-"`
	// Method and URL name the request the problem answered. Not on the wire.
	Method string `json:"-"`
	URL    string `json:"-"`
}

// Error formats the problem with the request it answered.
func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString("acme: ")
	if p.Method != "" {
		fmt.Fprintf(&b, "%s %s: ", p.Method, p.URL)
	}
	typ := strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:")
	if typ == "" {
		typ = "problem"
	}
	b.WriteString(typ)
	if p.Status != 0 {
		fmt.Fprintf(&b, " (%d)", p.Status)
	}
	if p.Detail != "" {
		b.WriteString(": ")
		b.WriteString(p.Detail)
	}
	for _, sp := range p.Subproblems {
		b.WriteString("; ")
		if sp.Identifier != nil {
			fmt.Fprintf(&b, "%s %s: ", sp.Identifier.Type, sp.Identifier.Value)
		}
		b.WriteString(strings.TrimPrefix(sp.Type, "urn:ietf:params:acme:error:"))
		if sp.Detail != "" {
			b.WriteString(": ")
			b.WriteString(sp.Detail)
		}
	}
	if p.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", p.RetryAfter)
	}
	return b.String()
}

// Is reports whether target is a *Problem of the same type, so that
// errors.Is(err, &acme.Problem{Type: acme.ProblemBadNonce}) works.
func (p *Problem) Is(target error) bool {
	t, ok := target.(*Problem)
	return ok && t.Type == p.Type && t.Type != ""
}

// jwsAlgNames matches JWS algorithm names in free text.
var jwsAlgNames = regexp.MustCompile(`\b(RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512|EdDSA|ML-DSA-44|ML-DSA-65|ML-DSA-87)\b`)

// fillAlgorithms recovers the accepted algorithms of a badSignatureAlgorithm
// problem from its detail when the server did not send the field.
func (p *Problem) fillAlgorithms() {
	if p.Type != ProblemBadSignatureAlgorithm || len(p.Algorithms) > 0 {
		return
	}
	seen := map[string]bool{}
	for _, a := range jwsAlgNames.FindAllString(p.Detail, -1) {
		if !seen[a] {
			seen[a] = true
			p.Algorithms = append(p.Algorithms, a)
		}
	}
}
