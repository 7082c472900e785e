// Command wrongversion is a plugin for the host's tests that completes
// go-plugin's handshake with acmehook's cookie but protocol version 99.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

type glue struct{ plugin.NetRPCUnsupportedPlugin }

func (glue) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (glue) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: 99, MagicCookieKey: "ACMEHOOK_PLUGIN", MagicCookieValue: "solver"},
		Plugins:         plugin.PluginSet{"solver": glue{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
