package main

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// binary is this plugin, built once by TestMain.
var binary string

func TestMain(m *testing.M) { sdktest.Main(m, "exampledns", &binary) }

func launch(t *testing.T, pebble *pebbletest.Server) *host.Plugin {
	return sdktest.Launch(t, host.LaunchOptions{Name: "exampledns", Path: binary, Config: map[string]any{
		"endpoint":             pebble.DNSManagementURL,
		"token":                "s3cret",
		"resolvers":            []any{pebble.DNSAddr}, // tests use only loopback resolvers
		"propagation_interval": "50ms",
	}})
}

// TestCheck presents a dns-01 challenge, checks it the way a CA would and
// cleans it up, with no CA involved.
func TestCheck(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	p := launch(t, pebble)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := &acme.Verifier{Resolvers: []string{pebble.DNSAddr}, Timeout: 5 * time.Second}
	for _, id := range []acme.Identifier{acme.DNS("check.example.com"), acme.DNS("*.wild.example.com")} {
		if err := sdktest.Check(ctx, p, v, acme.ChallengeDNS01, id); err != nil {
			t.Errorf("Check(%s) = %v", id.Value, err)
		}
	}
}

// TestIssue obtains a certificate from Pebble through the plugin.
func TestIssue(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	p := launch(t, pebble)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	ids := []acme.Identifier{acme.DNS("issue.example.com"), acme.DNS("*.issue.example.com")}
	chain, err := sdktest.Issue(ctx, c, p, acme.ChallengeDNS01, ids)
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain.Certificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: pebble.Roots(t, 0), Intermediates: inter, DNSName: "x.issue.example.com"}
	if _, err := chain.Certificates[0].Verify(opts); err != nil {
		t.Errorf("certificate does not verify for x.issue.example.com to Pebble's root: %v", err)
	}
}
