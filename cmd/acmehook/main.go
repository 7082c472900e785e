// Command acmehook obtains and renews certificates from an ACME CA (RFC
// 8555) as described by acmehook.toml, using solver plugins for the
// challenges and Lua scripts for deployment. Run "acmehook help" for the
// commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/acmehook/acmehook/engine"
)

func main() {
	// Lua scripts run in this same program re-executed as a script host
	// (a hidden subcommand); that must come before anything else.
	if code, ok := engine.ChildMain(); ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
