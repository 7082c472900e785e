// Command webroot is acmehook's http-01 solver plugin for sites served by an
// existing web server: it writes the key authorization under the site's
// document root. acmehook starts it; see the webroot package for the
// configuration.
package main

import (
	"fmt"
	"os"

	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugins/webroot/webroot"
)

func main() {
	if err := sdk.Serve(webroot.Plugin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
