package config

import (
	"net/netip"
	"strings"
)

// Identifier types and challenge types as written in ACME (RFC 8555 §9.7.7,
// §9.7.8; RFC 8738). They match the constants of package acme.
const (
	IdentifierDNS      = "dns"
	IdentifierIP       = "ip"
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Identifier is a parsed entry of a certificate's domains. It has the same
// fields as acme.Identifier, so the engine converts with
// acme.Identifier(id); config does not import acme to stay buildable on
// its own.
type Identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// parseIdentifier makes an identifier from a domains entry: an IP address
// becomes an ip identifier, anything else a lowercased dns identifier
// without a trailing dot (the same rule as acme.ParseIdentifier).
func parseIdentifier(s string) Identifier {
	if a, err := netip.ParseAddr(s); err == nil {
		return Identifier{Type: IdentifierIP, Value: a.String()}
	}
	return Identifier{Type: IdentifierDNS, Value: strings.ToLower(strings.TrimSuffix(s, "."))}
}

// Wildcard reports whether id is a wildcard DNS name ("*.example.com").
func (id Identifier) Wildcard() bool {
	return id.Type == IdentifierDNS && strings.HasPrefix(id.Value, "*.")
}
