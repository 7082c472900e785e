// Command standalone is acmehook's solver plugin for hosts without a web
// server: it answers http-01 and tls-alpn-01 challenges itself, from inside
// its own process. acmehook starts it; see the standalone package for the
// configuration.
package main

import (
	"fmt"
	"os"

	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugins/standalone/standalone"
)

func main() {
	if err := sdk.Serve(standalone.Plugin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
