package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestE2EProfiles, with the real binary against Pebble (which offers
// "default" and "shortlived"): check warns about a profile the CA's
// directory does not list (and still exits 0); an IP address certificate
// gets "shortlived" with the default profile = auto, which list --json
// reports as the applied profile; explain's text shows it too.
func TestE2EProfiles(t *testing.T) {
	s := newSite(t)
	s.write(`
[[certificate]]
name = "ip"
domains = ["127.0.0.1"]
solver = "webroot"

[[certificate]]
name = "gold"
domains = ["gold.profile.example.com"]
solver = "webroot"
profile = "gold"
`)
	o := s.acmehook("check")
	const warn = `warning: certificate gold: profile "gold": the CA's directory does not list it (it lists default, shortlived); requesting it anyway`
	if o.code != 0 || !strings.Contains(o.stdout, warn) || strings.Contains(o.stdout, "certificate ip: profile") {
		t.Errorf("check: %s\nwant exit 0 and %q only", o, warn)
	}
	o = s.acmehook("issue", "ip")
	if o.code != 0 {
		t.Fatalf("issue ip: %s", o)
	}
	o = s.acmehook("list", "--json")
	var doc ListOutput
	if err := json.Unmarshal([]byte(o.stdout), &doc); err != nil {
		t.Fatalf("list --json: %v\n%s", err, o)
	}
	for _, c := range doc.Certificates {
		if c.Name == "ip" && (c.Current == nil || c.Current.Profile != "shortlived") {
			t.Errorf("list --json: ip = %+v, want the applied profile shortlived", c.Current)
		}
	}
	if o := s.acmehook("explain", "ip"); o.code != 0 || !strings.Contains(o.stdout, "\nprofile:         shortlived\n") {
		t.Errorf("explain ip: %s\nwant the line \"profile:         shortlived\"", o)
	}
}
