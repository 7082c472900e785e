package acme

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Identifier types, RFC 8555 §9.7.7 and RFC 8738.
const (
	IdentifierDNS = "dns"
	IdentifierIP  = "ip"
)

// Challenge types, RFC 8555 §8.3, §8.4 and RFC 8737.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeDNS01     = "dns-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Identifier is an ACME identifier object, RFC 8555 §7.1.3.
type Identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// DNS returns a dns identifier for name.
func DNS(name string) Identifier { return Identifier{Type: IdentifierDNS, Value: name} }

// IP returns an ip identifier for addr (RFC 8738).
func IP(addr netip.Addr) Identifier { return Identifier{Type: IdentifierIP, Value: addr.String()} }

// ParseIdentifier makes an identifier from user input: an IP address
// becomes an ip identifier, anything else a dns identifier (lowercased).
func ParseIdentifier(s string) Identifier {
	if a, err := netip.ParseAddr(s); err == nil {
		return IP(a)
	}
	return DNS(strings.ToLower(strings.TrimSuffix(s, ".")))
}

// Wildcard reports whether the identifier is a wildcard DNS name ("*.example.com").
func (id Identifier) Wildcard() bool {
	return id.Type == IdentifierDNS && strings.HasPrefix(id.Value, "*.")
}

// String returns the identifier's value, which is what users write.
func (id Identifier) String() string { return id.Value }

// ErrInvalidToken is returned when a challenge token from the server is not
// strict base64url (RFC 8555 §8.1). Such a token is never used to build a
// path, a URL or a command.
var ErrInvalidToken = errors.New("acme: challenge token is not base64url")

// ValidateToken checks that token is non-empty, unpadded base64url with at
// least 128 bits of entropy (22 characters), as RFC 8555 §8.3 requires.
func ValidateToken(token string) error {
	if len(token) < 22 || len(token) > 1024 {
		return fmt.Errorf("%w: length %d", ErrInvalidToken, len(token))
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: byte %q at offset %d", ErrInvalidToken, c, i)
		}
	}
	return nil
}

// validHostName reports whether name is a DNS name made of labels of
// letters, digits, hyphens and underscores only, so that it can be the
// host of a URL as it is: an identifier from the server with "/", "@",
// ":" or "#" in it could otherwise point a URL elsewhere.
func validHostName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
