// Package sdk is what an acmehook solver plugin imports, and what acmehook
// uses to run one.
//
// A solver plugin is a separate executable that makes ACME challenges
// (RFC 8555 §8, RFC 8737) answerable: it writes a file for http-01, sets a
// TXT record for dns-01, or serves a certificate for tls-alpn-01. acmehook
// starts it through HashiCorp go-plugin over gRPC with automatic mutual TLS,
// launches it once and reuses it for every challenge.
//
// A plugin's main is one line:
//
//	func main() { sdk.Serve(myvendor.New()) }
//
// where myvendor's type implements [Solver] (and [Waiter] if it waits for DNS
// propagation itself). The host side is [Launch].
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/go-plugin"
)

// ProtocolVersion is the version of the solver protocol this SDK speaks
// (PROTOCOL_VERSION_CURRENT in solver.proto). Host and plugin must agree.
const ProtocolVersion = 1

// pluginName is the key of the solver in go-plugin's plugin set.
const pluginName = "solver"

// handshake is go-plugin's handshake. The cookie is a convenience that stops
// a plugin run by hand, not a security measure: checksums are (see
// LaunchOptions.SHA256).
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "ACMEHOOK_PLUGIN",
	MagicCookieValue: "solver",
}

// Solver is what a plugin implements. Every method MUST honour ctx and MUST
// be safe for concurrent use: the host may present several challenges at
// once through one process.
type Solver interface {
	// Info describes the plugin. It MUST be cheap and work before Configure.
	Info(ctx context.Context, req *InfoRequest) (*InfoResponse, error)
	// Configure receives the plugin's configuration table. The host calls it
	// once, before any challenge. Unknown keys SHOULD be an error.
	Configure(ctx context.Context, req *ConfigureRequest) (*ConfigureResponse, error)
	// Present makes the challenge answerable. It MUST refuse values it
	// cannot use safely (a token that is not base64url, a name with path
	// separators) rather than sanitize them.
	Present(ctx context.Context, req *PresentRequest) (*PresentResponse, error)
	// CleanUp undoes Present. It is called even when Present failed, and
	// SHOULD succeed when there is nothing to undo.
	CleanUp(ctx context.Context, req *CleanUpRequest) (*CleanUpResponse, error)
}

// Waiter is implemented by a Solver that waits itself until a presented
// challenge is visible to the CA (DNS propagation). InfoResponse's
// WaitsForPropagation tells the host to call it.
type Waiter interface {
	Wait(ctx context.Context, req *WaitRequest) (*WaitResponse, error)
}

// Closer is implemented by a Solver that holds resources (listening
// sockets, connections) to release when acmehook stops the plugin. Serve
// calls Close once, after the last call has been answered.
type Closer interface {
	Close() error
}

// InfoRequest asks a plugin to describe itself.
type InfoRequest struct{}

// InfoResponse describes a plugin.
type InfoResponse struct {
	Name    string
	Version string
	// ChallengeTypes the plugin solves: "http-01", "dns-01", "tls-alpn-01".
	ChallengeTypes []string
	// IdentifierTypes the plugin solves: "dns", "ip".
	IdentifierTypes []string
	// WaitsForPropagation is true when the plugin implements Waiter.
	WaitsForPropagation bool
}

// ConfigureRequest carries the plugin's configuration table.
type ConfigureRequest struct {
	// Config is the table as JSON-compatible values (strings, float64
	// numbers, bools, nil, []any, map[string]any). Decode it with
	// DecodeConfig.
	Config map[string]any
}

// ConfigureResponse answers Configure.
type ConfigureResponse struct{}

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

// DecodeConfig decodes a configuration table into v (a pointer to a struct
// with json tags) strictly: a key v has no field for is an error naming it.
// Durations decode into [Duration].
func DecodeConfig(config map[string]any, v any) error {
	b, err := json.Marshal(config)
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

// pluginSet is the go-plugin plugin set of both sides.
func pluginSet(impl Solver) plugin.PluginSet {
	return plugin.PluginSet{pluginName: &grpcPlugin{impl: impl}}
}
