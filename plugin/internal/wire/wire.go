// Package wire holds what both sides of the solver protocol must agree on
// beyond solver.proto: go-plugin's handshake, the name the solver is
// dispensed under, and the message size limit. plugin/sdk (the plugin's
// side) and plugin/host (acmehook's side) import it; nothing else does.
package wire

import (
	"strconv"

	"github.com/hashicorp/go-plugin"
)

// ServerCertEnvEntry is the environment entry that points a plugin at
// ServerCertFD.
var ServerCertEnvEntry = ServerCertEnv + "=" + strconv.Itoa(ServerCertFD)

// ProtocolVersion is the solver protocol version, PROTOCOL_VERSION_CURRENT
// in solver.proto (a test pins the two together).
const ProtocolVersion = 1

// PluginName is the key of the solver in go-plugin's plugin set.
const PluginName = "solver"

// MaxMessageSize bounds every gRPC message on the plugin connection, in
// both directions and on both ends (gRPC's own default receive limit is
// 4 MiB, but go-plugin raises it to 2 GiB): a challenge or a configuration
// table is a few KiB, so anything near this size is a fault.
const MaxMessageSize = 4 << 20

// ServerCertFD is the file descriptor on which the host offers a plugin
// a server certificate and its key (PEM, certificate then PKCS #8 key,
// then end of file), and ServerCertEnv the variable that says so. A
// plugin using it serves TLS with that certificate and announces none in
// its handshake line; a plugin that ignores it makes and announces its
// own, as go-plugin's AutoMTLS does.
const (
	ServerCertFD  = 3
	ServerCertEnv = "ACMEHOOK_PLUGIN_SERVER_CERT_FD"
)

// Handshake is go-plugin's handshake. The cookie is a convenience that
// stops a plugin run by hand, not a security measure: checksums are.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "ACMEHOOK_PLUGIN",
	MagicCookieValue: "solver",
}
