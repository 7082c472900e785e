package acme

import (
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"time"
)

// Status values of accounts, orders, authorizations and challenges
// (RFC 8555 §7.1.6).
const (
	StatusPending     = "pending"
	StatusReady       = "ready"
	StatusProcessing  = "processing"
	StatusValid       = "valid"
	StatusInvalid     = "invalid"
	StatusDeactivated = "deactivated"
	StatusExpired     = "expired"
	StatusRevoked     = "revoked"
)

// Directory is the server's directory object, RFC 8555 §7.1.1. The
// renewalInfo entry is RFC 9773 §4.
type Directory struct {
	NewNonce    string `json:"newNonce"`
	NewAccount  string `json:"newAccount"`
	NewOrder    string `json:"newOrder"`
	NewAuthz    string `json:"newAuthz,omitempty"`
	RevokeCert  string `json:"revokeCert"`
	KeyChange   string `json:"keyChange"`
	RenewalInfo string `json:"renewalInfo,omitempty"`
	Meta        Meta   `json:"meta,omitzero"`
	// URL is the directory's own URL. Not on the wire.
	URL string `json:"-"`
}

// Meta is the directory's metadata, RFC 8555 §7.1.1. Profiles maps each
// profile the server offers to its description (draft-ietf-acme-profiles).
type Meta struct {
	TermsOfService          string            `json:"termsOfService,omitempty"`
	Website                 string            `json:"website,omitempty"`
	CAAIdentities           []string          `json:"caaIdentities,omitempty"`
	ExternalAccountRequired bool              `json:"externalAccountRequired,omitempty"`
	Profiles                map[string]string `json:"profiles,omitempty"`
}

// Account is an ACME account object, RFC 8555 §7.1.2. Key is the account's
// private key and URL its location (the JWS "kid"); neither is on the wire.
type Account struct {
	Status                 string          `json:"status,omitempty"`
	Contact                []string        `json:"contact,omitempty"`
	TermsOfServiceAgreed   bool            `json:"termsOfServiceAgreed,omitempty"`
	Orders                 string          `json:"orders,omitempty"`
	ExternalAccountBinding json.RawMessage `json:"externalAccountBinding,omitempty"`

	URL string        `json:"-"`
	Key crypto.Signer `json:"-"`
}

// Order is an ACME order object, RFC 8555 §7.1.3, with the "profile"
// (draft-ietf-acme-profiles) and "replaces" (RFC 9773 §5) fields.
type Order struct {
	Status         string       `json:"status,omitempty"`
	Expires        time.Time    `json:"expires,omitzero"`
	Identifiers    []Identifier `json:"identifiers"`
	NotBefore      time.Time    `json:"notBefore,omitzero"`
	NotAfter       time.Time    `json:"notAfter,omitzero"`
	Error          *Problem     `json:"error,omitempty"`
	Authorizations []string     `json:"authorizations,omitempty"`
	Finalize       string       `json:"finalize,omitempty"`
	Certificate    string       `json:"certificate,omitempty"`
	Profile        string       `json:"profile,omitempty"`
	Replaces       string       `json:"replaces,omitempty"`

	// URL is the order's location. Not on the wire.
	URL string `json:"-"`
	// RetryAfter is the Retry-After of the response that carried the
	// order, zero if none. Not on the wire.
	RetryAfter time.Duration `json:"-"`
}

// Authorization is an ACME authorization object, RFC 8555 §7.1.4.
type Authorization struct {
	Identifier Identifier  `json:"identifier"`
	Status     string      `json:"status"`
	Expires    time.Time   `json:"expires,omitzero"`
	Challenges []Challenge `json:"challenges"`
	Wildcard   bool        `json:"wildcard,omitempty"`

	// URL is the authorization's location. Not on the wire.
	URL string `json:"-"`
	// RetryAfter is the Retry-After of the response, zero if none.
	RetryAfter time.Duration `json:"-"`
}

// Challenge is an ACME challenge object, RFC 8555 §7.1.5 and §8. A
// challenge of a type this package does not know is kept as is (like
// acme-python's UnrecognizedChallenge): its common fields are decoded and
// Raw holds the whole object.
type Challenge struct {
	Type      string    `json:"type"`
	URL       string    `json:"url"`
	Status    string    `json:"status"`
	Validated time.Time `json:"validated,omitzero"`
	Error     *Problem  `json:"error,omitempty"`
	// Token is untrusted server data; it is validated (ValidateToken)
	// before any use.
	Token string `json:"token,omitempty"`

	// Raw is the challenge object exactly as the server sent it. Not
	// re-encoded on the wire.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes a challenge and keeps its raw form.
func (c *Challenge) UnmarshalJSON(b []byte) error {
	type plain Challenge
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*c = Challenge(p)
	c.Raw = bytes.Clone(b)
	return nil
}

// Recognized reports whether the challenge is of a type this package
// implements (http-01, dns-01, tls-alpn-01).
func (c Challenge) Recognized() bool {
	switch c.Type {
	case ChallengeHTTP01, ChallengeDNS01, ChallengeTLSALPN01:
		return true
	}
	return false
}

// Challenge returns the authorization's challenge of type typ, or false.
func (a Authorization) Challenge(typ string) (Challenge, bool) {
	for _, c := range a.Challenges {
		if c.Type == typ {
			return c, true
		}
	}
	return Challenge{}, false
}

// RenewalInfo is an ARI renewalInfo object, RFC 9773 §4.2.
type RenewalInfo struct {
	SuggestedWindow struct {
		Start time.Time `json:"start"`
		End   time.Time `json:"end"`
	} `json:"suggestedWindow"`
	ExplanationURL string `json:"explanationURL,omitempty"`

	// RetryAfter is when the client should ask again (RFC 9773 §4.3). Not
	// on the wire.
	RetryAfter time.Duration `json:"-"`
}

// decode unmarshals untrusted JSON into v, wrapping any failure in
// ErrMalformedResponse.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedResponse, err)
	}
	return nil
}
