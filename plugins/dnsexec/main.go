// Command dnsexec is acmehook's dns-01 solver plugin that runs a program of
// the user's to set and remove the TXT record, then waits until the
// authoritative nameservers answer it. acmehook starts it; see the dnsexec
// package for the program contract and the configuration.
package main

import (
	"fmt"
	"os"

	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugins/dnsexec/dnsexec"
)

func main() {
	if err := sdk.Serve(dnsexec.Plugin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
