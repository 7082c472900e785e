package luahost

import (
	"time"

	lua "github.com/yuin/gopher-lua"
)

// EventName names a lifecycle event a script can subscribe to with
// acmehook.on.
type EventName string

// The events. ChallengeProvision is the only pre-event: a handler failure
// vetoes the challenge. The others are post-events: a failure cannot undo
// anything and is reported so the engine can retry the deploy.
const (
	ChallengeProvision EventName = "challenge-provision"
	ChallengeCleanup   EventName = "challenge-cleanup"
	Issued             EventName = "issued"
	Renew              EventName = "renew"
	Revoke             EventName = "revoke"
	Failed             EventName = "failed"
)

// Events lists every event in lifecycle order.
var Events = []EventName{ChallengeProvision, ChallengeCleanup, Issued, Renew, Revoke, Failed}

// Valid reports whether n is one of Events.
func (n EventName) Valid() bool {
	for _, e := range Events {
		if n == e {
			return true
		}
	}
	return false
}

// Pre reports whether n is a pre-event whose handlers may veto.
func (n EventName) Pre() bool { return n == ChallengeProvision }

// Event is the data handed to a script's handlers. It becomes a plain Lua
// table with snake_case keys (listed beside each field); zero-valued fields
// are absent (nil in Lua).
type Event struct {
	Name     EventName // name
	CertName string    // cert_name
	Domains  []string  // domains (array)

	CertPath      string // cert_path
	KeyPath       string // key_path
	ChainPath     string // chain_path
	FullchainPath string // fullchain_path
	// PEM texts of the certificate, the issuer chain and both together.
	// The private key is only ever passed as KeyPath.
	CertPEM      string // cert_pem
	ChainPEM     string // chain_pem
	FullchainPEM string // fullchain_pem

	Serial         string    // serial: lowercase hex, as acmehook.x509.parse reports it
	NotBefore      time.Time // not_before: Unix seconds
	NotAfter       time.Time // not_after: Unix seconds
	Issuer         string    // issuer: distinguished name
	Profile        string    // profile: ACME profile name, if any
	PreviousSerial string    // previous_serial: on renew

	// RevocationReason is the RFC 5280 §5.3.1 reason code; on revoke it is
	// always present as revocation_reason.
	RevocationReason int

	Error     *EventError // error: on failed
	Challenge *Challenge  // challenge: on challenge events

	// Test marks a synthetic event (see SyntheticEvent); test = true.
	Test bool
}

// EventError describes why issuance or renewal failed. An ACME problem
// document (RFC 8555 §6.7) is reduced to its type and detail.
type EventError struct {
	Message       string // message
	ProblemType   string // problem_type, e.g. "urn:ietf:params:acme:error:rateLimited"
	ProblemDetail string // problem_detail
}

// Challenge carries the fields of an ACME challenge (RFC 8555 §8).
type Challenge struct {
	Type             string // type: "http-01", "dns-01", "tls-alpn-01"
	Identifier       string // identifier: the domain being validated
	Token            string // token
	KeyAuthorization string // key_authorization (RFC 8555 §8.1)
	DNSName          string // dns_name: "_acme-challenge.<domain>." for dns-01
	DNSValue         string // dns_value: the TXT record value for dns-01
}

// table builds the event's Lua table field by field.
func (e Event) table(L *lua.LState) *lua.LTable {
	t := L.CreateTable(0, 24)
	str := func(t *lua.LTable, k, v string) {
		if v != "" {
			t.RawSetString(k, lua.LString(v))
		}
	}
	unix := func(k string, v time.Time) {
		if !v.IsZero() {
			t.RawSetString(k, lua.LNumber(v.Unix()))
		}
	}
	str(t, "name", string(e.Name))
	str(t, "cert_name", e.CertName)
	domains := L.CreateTable(len(e.Domains), 0)
	for _, d := range e.Domains {
		domains.Append(lua.LString(d))
	}
	t.RawSetString("domains", domains)
	str(t, "cert_path", e.CertPath)
	str(t, "key_path", e.KeyPath)
	str(t, "chain_path", e.ChainPath)
	str(t, "fullchain_path", e.FullchainPath)
	str(t, "cert_pem", e.CertPEM)
	str(t, "chain_pem", e.ChainPEM)
	str(t, "fullchain_pem", e.FullchainPEM)
	str(t, "serial", e.Serial)
	unix("not_before", e.NotBefore)
	unix("not_after", e.NotAfter)
	str(t, "issuer", e.Issuer)
	str(t, "profile", e.Profile)
	str(t, "previous_serial", e.PreviousSerial)
	if e.Name == Revoke || e.RevocationReason != 0 {
		t.RawSetString("revocation_reason", lua.LNumber(e.RevocationReason))
	}
	if e.Error != nil {
		et := L.CreateTable(0, 3)
		str(et, "message", e.Error.Message)
		str(et, "problem_type", e.Error.ProblemType)
		str(et, "problem_detail", e.Error.ProblemDetail)
		t.RawSetString("error", et)
	}
	if c := e.Challenge; c != nil {
		ct := L.CreateTable(0, 6)
		str(ct, "type", c.Type)
		str(ct, "identifier", c.Identifier)
		str(ct, "token", c.Token)
		str(ct, "key_authorization", c.KeyAuthorization)
		str(ct, "dns_name", c.DNSName)
		str(ct, "dns_value", c.DNSValue)
		t.RawSetString("challenge", ct)
	}
	if e.Test {
		t.RawSetString("test", lua.LTrue)
	}
	return t
}
