// Command example is a dns-01 plugin for a made-up DNS provider API (pebble-challtestsrv's); see docs/plugins.md.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/dns01"
)

type provider struct { // its fields are the plugin's configuration keys
	Endpoint     string `json:"endpoint"`
	Token        string `json:"token"`
	dns01.Config        // resolvers, propagation_timeout, propagation_interval
}

func (p *provider) SetTXT(ctx context.Context, name, value string, set bool) error {
	path := map[bool]string{true: "/set-txt", false: "/clear-txt"}[set]
	body := fmt.Sprintf(`{"host":%q,"value":%q,"token":%q}`, name, value, p.Token)
	req, err := http.NewRequestWithContext(ctx, "POST", p.Endpoint+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil && resp.Body.Close() == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", path, resp.Status)
	}
	return err
}

func main() {
	if err := sdk.Serve(sdk.Plugin{Name: "example", ChallengeTypes: []string{"dns-01"}, WaitsForPropagation: true, New: dns01.New[provider]}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
