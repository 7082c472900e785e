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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
