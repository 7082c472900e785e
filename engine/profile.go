package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// orderProfile returns the profile to request for cert from a CA whose
// directory offers the profiles offered (draft-ietf-acme-profiles), and a
// warning when cert names one that the directory does not list. With
// profile = "auto" (or none), a certificate with an IP address gets
// "shortlived" when it is offered (Let's Encrypt issues IP address
// certificates only under it), any other none: the CA's default. A named
// profile is requested as written; the CA decides what an unlisted one
// means.
func orderProfile(cert *config.Certificate, offered map[string]string) (profile, warning string) {
	p := cert.ProfileSetting()
	if p != config.ProfileAuto {
		if _, ok := offered[p]; !ok {
			if len(offered) == 0 {
				return p, fmt.Sprintf("profile %q: the CA's directory lists no profiles; requesting it anyway", p)
			}
			return p, fmt.Sprintf("profile %q: the CA's directory does not list it (it lists %s); requesting it anyway", p, strings.Join(slices.Sorted(maps.Keys(offered)), ", "))
		}
		return p, ""
	}
	if _, ok := offered[config.ProfileShortLived]; ok {
		for _, id := range cert.Identifiers {
			if id.Type == acme.IdentifierIP {
				return config.ProfileShortLived, ""
			}
		}
	}
	return "", ""
}

// profileRequested returns the profile setting a stored version was
// ordered with, for comparing with the configuration: versions stored
// before the applied profile was recorded hold the setting in Profile.
func profileRequested(info store.VersionInfo) string {
	if info.ProfileRequested != "" {
		return info.ProfileRequested
	}
	if info.Profile == "" {
		return config.ProfileAuto
	}
	return info.Profile
}

// ProfileWarnings reads the CA's directory (one GET, bounded by
// ca.http_timeout) and returns, for each certificate of cfg that names a
// profile, a warning when the directory does not list it, as `acmehook
// check` prints them. A configuration naming no profile is not checked and
// the CA is not contacted.
func ProfileWarnings(ctx context.Context, cfg *config.Config) ([]string, error) {
	var named []*config.Certificate
	for _, c := range cfg.Certificates {
		if c.ProfileSetting() != config.ProfileAuto {
			named = append(named, c)
		}
	}
	if len(named) == 0 {
		return nil, nil
	}
	hc, err := caHTTPClient(cfg.CA.CABundle)
	if err != nil {
		return nil, err
	}
	c := &acme.Client{DirectoryURL: cfg.CA.Directory, HTTPClient: hc, UserAgent: "acmehook/" + BuildVersion(), RequestTimeout: cfg.CA.HTTPTimeout.Duration}
	dir, err := c.Directory(ctx)
	if err != nil {
		return nil, err // the client's error says "fetching directory"
	}
	var out []string
	for _, cert := range named {
		if _, w := orderProfile(cert, dir.Meta.Profiles); w != "" {
			out = append(out, "certificate "+cert.Name+": "+w)
		}
	}
	return out, nil
}
