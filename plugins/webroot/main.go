// Command webroot is acmehook's http-01 solver plugin for sites served by an
// existing web server: it writes the key authorization under the site's
// document root. acmehook starts it; see the webroot package for the
// configuration.
package main

import (
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugins/webroot/webroot"
)

func main() { sdk.Serve(webroot.New()) }
