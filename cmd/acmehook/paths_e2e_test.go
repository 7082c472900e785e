package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2ERelativePaths starts acmehook from a directory other than the
// configuration's (as every e2e test does): storage and scripts written
// relative to the configuration file are found there, and so are the
// relative paths a script uses (acmehook.files, exec), in `run` and in
// `script test`. acmehook never changes its own working directory.
func TestE2ERelativePaths(t *testing.T) {
	s := newSite(t)
	script := `local acmehook = require("acmehook")
acmehook.on("issued", function(ev)
  assert(acmehook.files.write("marks/" .. ev.cert_name .. (ev.test and ".test" or ""), ev.serial))
  local r = assert(acmehook.exec({"./mark.sh"}))
  assert(r.code == 0, "mark.sh: " .. r.stderr)
end)
`
	for name, body := range map[string]string{"rel.lua": script, "mark.sh": "#!/bin/sh\necho ran >> marks/exec\n"} {
		if err := os.WriteFile(filepath.Join(s.work.Dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.work.Dir, "marks"), 0o700); err != nil {
		t.Fatal(err)
	}
	s.write("[[certificate]]\nname = \"rel\"\ndomains = [\"rel.example.com\"]\nsolver = \"webroot\"\nscripts = [\"events.lua\", \"rel.lua\"]\n")

	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("run: want exit 0\n%s", o)
	}
	cert, _ := s.stored("rel", []string{"rel.example.com"})
	mark, err := os.ReadFile(filepath.Join(s.work.Dir, "marks", "rel"))
	if err != nil {
		t.Fatalf("the script's relative files.write did not land beside the configuration: %v", err)
	}
	if want := strings.ToLower(cert.SerialNumber.Text(16)); string(mark) != want {
		t.Errorf("marks/rel = %q, want the serial %q", mark, want)
	}

	if o := s.acmehook("script", "test", filepath.Join(s.work.Dir, "rel.lua"), "issued", "--cert", "rel"); o.code != 0 {
		t.Fatalf("script test: want exit 0\n%s", o)
	}
	if _, err := os.Stat(filepath.Join(s.work.Dir, "marks", "rel.test")); err != nil {
		t.Errorf("script test: the relative files.write did not land beside the configuration: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(s.work.Dir, "marks", "exec")); err != nil || string(b) != "ran\nran\n" {
		t.Errorf("marks/exec = %q, %v; want ./mark.sh run twice beside the configuration", b, err)
	}
	cwd := s.command().Dir
	if _, err := os.Stat(filepath.Join(cwd, "marks")); err == nil {
		t.Errorf("%s/marks exists: a relative path was resolved against acmehook's working directory", cwd)
	}
}
