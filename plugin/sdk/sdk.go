// Package sdk is what an acmehook solver plugin imports.
//
// A solver plugin is a separate executable that makes ACME challenges
// (RFC 8555 §8, RFC 8737) answerable: it writes a file for http-01, sets a
// TXT record for dns-01, or serves a certificate for tls-alpn-01. acmehook
// starts it through HashiCorp go-plugin over gRPC with mutual TLS, launches
// it once and reuses it for every challenge of a run.
//
// A plugin's main describes the plugin and names its constructor:
//
//	func main() {
//		if err := sdk.Serve(sdk.Plugin{Name: "mydns", Version: "1.0.0",
//			ChallengeTypes: []string{"dns-01"}, New: newSolver}); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//	}
//
// newSolver receives the plugin's configuration table and logger once and
// returns a ready [Solver], so a solver needs no mutex and no "not
// configured" state. A dns-01 solver that waits for propagation implements
// [Waiter] as well, usually in one line with the propagation package. The
// sdktest package tests a plugin from the vendor's own module. acmehook's
// side of the protocol is plugin/host; a plugin never imports it.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/acmehook/acmehook/plugin/internal/wire"
)

// ProtocolVersion is the version of the solver protocol this SDK speaks
// (PROTOCOL_VERSION_CURRENT in solver.proto). Host and plugin must agree.
const ProtocolVersion = wire.ProtocolVersion

// Plugin describes a solver plugin to [Serve]. acmehook asks for the
// description (the protocol's Info) before it sends the configuration.
type Plugin struct {
	// Name and Version identify the plugin in acmehook's log and in
	// `acmehook plugins`. Name is required.
	Name, Version string
	// ChallengeTypes the plugin solves, preferred first: "http-01",
	// "dns-01", "tls-alpn-01". Required.
	ChallengeTypes []string
	// IdentifierTypes the plugin solves: "dns", "ip". Empty means "dns".
	IdentifierTypes []string
	// WaitsForPropagation tells acmehook to call Wait after Present. The
	// solver New returns MUST then implement [Waiter], and MUST NOT when
	// it is false; Serve refuses the configuration otherwise.
	WaitsForPropagation bool
	// New returns the solver for a configuration. acmehook calls it once,
	// when the plugin starts, with its table from acmehook's configuration.
	// An error (an unknown key, a missing value) stops the plugin's
	// launch with that message. Required.
	New func(ctx context.Context, cfg Config) (Solver, error)
}

// Config is what a solver's constructor receives.
type Config struct {
	// Values is the plugin's configuration table as JSON-compatible values
	// (strings, float64 numbers, bools, nil, []any, map[string]any).
	// Decode turns it into a struct.
	Values map[string]any
	// Logger is the plugin's logger (Serve always sets it; use Log, which
	// discards for a Config built by hand without one). What a plugin logs
	// through it appears in acmehook's log, attributed to the plugin, at
	// the same level. Never log key authorizations or private keys above
	// Debug.
	Logger *slog.Logger
}

// Decode decodes the configuration table into v (a pointer to a struct
// with json tags) strictly: a key v has no field for is an error naming
// it. Fields hold their defaults when their key is absent; durations
// decode into [Duration].
func (c Config) Decode(v any) error {
	b, err := json.Marshal(c.Values)
	if err != nil {
		return fmt.Errorf("encoding configuration: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding configuration: %w", err)
	}
	return nil
}

// Log returns c.Logger, or a logger that discards when it is nil.
func (c Config) Log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Solver is what a plugin implements. Every method MUST honour ctx and MUST
// be safe for concurrent use: acmehook presents several challenges at once
// through one process (at most the plugin's max_calls).
type Solver interface {
	// Present makes the challenge answerable. It MUST refuse values it
	// cannot use safely (a token that is not base64url, a name with path
	// separators) rather than sanitize them.
	Present(ctx context.Context, req *PresentRequest) (*PresentResponse, error)
	// CleanUp undoes Present. It is called even when Present failed, and
	// SHOULD succeed when there is nothing to undo.
	CleanUp(ctx context.Context, req *CleanUpRequest) (*CleanUpResponse, error)
}

// Waiter is implemented by a Solver that waits itself until a presented
// challenge is visible to the CA (DNS propagation); Plugin's
// WaitsForPropagation says so to acmehook.
type Waiter interface {
	Wait(ctx context.Context, req *WaitRequest) (*WaitResponse, error)
}

// Offerer is implemented by a Solver whose configuration narrows the
// challenge types it solves (a server with http-01 turned off): once the
// solver is built, the plugin's Info answers Offers instead of
// Plugin.ChallengeTypes, so acmehook never picks a type that is off.
type Offerer interface {
	Offers() []string
}

// Closer is implemented by a Solver that holds resources (listening
// sockets, connections) to release when acmehook stops the plugin. Serve
// calls Close once, after the last call has been answered.
type Closer interface {
	Close() error
}

// PresentRequest asks the plugin to make a challenge answerable.
type PresentRequest struct{ Challenge Challenge }

// PresentResponse answers Present.
type PresentResponse struct{}

// WaitRequest asks the plugin to wait until a presented challenge is visible.
type WaitRequest struct{ Challenge Challenge }

// WaitResponse answers Wait.
type WaitResponse struct{}

// CleanUpRequest asks the plugin to undo Present.
type CleanUpRequest struct{ Challenge Challenge }

// CleanUpResponse answers CleanUp.
type CleanUpResponse struct{}

// Identifier is an ACME identifier, RFC 8555 §7.1.3 and RFC 8738.
type Identifier struct {
	// Type is "dns" or "ip".
	Type string
	// Value is the authorization's identifier value, never with "*.".
	Value string
	// Wildcard is true when the order asked for "*.<Value>" (§7.1.4).
	Wildcard bool
}

// Challenge is one ACME challenge with everything a solver needs already
// derived by the host.
type Challenge struct {
	// Type is "http-01", "dns-01" or "tls-alpn-01".
	Type       string
	Identifier Identifier
	// Token is the challenge token, RFC 8555 §8.3. The host does not
	// promise it is valid: check it (acme.ValidateToken) before use.
	Token string
	// KeyAuthorization is Token + "." + the account key thumbprint (§8.1):
	// the body of the http-01 response.
	KeyAuthorization string
	// DNS01RecordName is the fully qualified TXT name,
	// "_acme-challenge.<Value>." (§8.4); dns-01 only.
	DNS01RecordName string
	// DNS01RecordValue is base64url(SHA-256(KeyAuthorization)); dns-01 only.
	DNS01RecordValue string
	// TLSALPN01CertPEM and TLSALPN01KeyPEM are the self-signed certificate
	// with the acmeIdentifier extension and its key (RFC 8737 §3);
	// tls-alpn-01 only.
	TLSALPN01CertPEM []byte
	TLSALPN01KeyPEM  []byte
	// URL is the challenge's URL at the CA, for logs.
	URL string
}

// LogValue logs a challenge without its key authorization or private key.
func (c Challenge) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", c.Type),
		slog.String("identifier", c.Identifier.Value),
		slog.Bool("wildcard", c.Identifier.Wildcard),
		slog.String("url", c.URL),
	)
}

// Duration is a time.Duration written in configuration as a string such as
// "30s" or "2m".
type Duration time.Duration

// UnmarshalJSON parses a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
