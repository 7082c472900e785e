package dnsexec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/plugin/sdk"
)

func TestNew(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	prog := filepath.Join(dir, "prog")
	os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o700)
	res := []any{"127.0.0.1:53"}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"resolvers": res}, "program is required"},
		{map[string]any{"program": "prog", "resolvers": res}, "program: stat " + filepath.Join(wd, "prog") + ": no such file or directory"},
		// A bare name is a file in the working directory, never one in PATH.
		{map[string]any{"program": "sh", "resolvers": res}, "program: stat " + filepath.Join(wd, "sh") + ": no such file or directory"},
		{map[string]any{"program": plain, "resolvers": res}, "is not executable"},
		{map[string]any{"program": dir, "resolvers": res}, "is not executable"},
		{map[string]any{"program": prog, "resolvers": res, "env": map[string]any{"ACMEHOOK_DOMAIN": "x"}}, `env: invalid variable name "ACMEHOOK_DOMAIN" (the ACMEHOOK_ prefix is reserved)`},
		{map[string]any{"program": prog, "resolvers": res, "timeout": "-1s"}, "must be positive"},
		{map[string]any{"program": prog, "resolvers": res, "output_limit": 0}, "output_limit must be positive"},
		{map[string]any{"program": prog, "resolvers": res, "propagation_timeout": "soon"}, `time: invalid duration "soon"`},
		{map[string]any{"program": prog, "resolver": res}, `unknown field "resolver"`},
	}
	for _, tt := range tests {
		_, err := New(sdk.Config{Values: tt.cfg})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	// A relative program is made absolute against the working directory,
	// where the program also runs.
	t.Chdir(dir)
	s, err := New(sdk.Config{Values: map[string]any{"program": "prog", "resolvers": res}})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Program != prog || s.dir != dir {
		t.Errorf("program = %s in %s, want %s in %s", s.cfg.Program, s.dir, prog, dir)
	}
}

// TestProgramEnv: the program gets the plugin's environment without
// go-plugin's handshake variables, the env table over it, then ACMEHOOK_*.
func TestProgramEnv(t *testing.T) {
	saved := os.Environ()
	t.Cleanup(func() {
		os.Clearenv()
		for _, kv := range saved {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	os.Clearenv()
	for k, v := range map[string]string{
		"PATH": "/usr/bin", "CHALLTESTSRV_URL": "http://127.0.0.1:8055", "SHARED": "from-plugin",
		"PLUGIN_CLIENT_CERT": "cert", "PLUGIN_PROTOCOL_VERSIONS": "1", "ACMEHOOK_PLUGIN": "solver", "ACMEHOOK_DOMAIN": "stale",
	} {
		t.Setenv(k, v)
	}
	c := sdk.Challenge{Identifier: sdk.Identifier{Value: "example.com", Wildcard: true}, Token: "tok", KeyAuthorization: "tok.thumb", DNS01RecordValue: "val"}
	got := programEnv(map[string]string{"SHARED": "from-config", "TOKEN": "t"}, "present", "_acme-challenge.example.com.", c)
	slices.Sort(got)
	want := []string{
		"ACMEHOOK_ACTION=present", "ACMEHOOK_DOMAIN=example.com", "ACMEHOOK_KEY_AUTHORIZATION=tok.thumb",
		"ACMEHOOK_RECORD_NAME=_acme-challenge.example.com.", "ACMEHOOK_RECORD_VALUE=val", "ACMEHOOK_TOKEN=tok", "ACMEHOOK_WILDCARD=true",
		"CHALLTESTSRV_URL=http://127.0.0.1:8055", "PATH=/usr/bin", "SHARED=from-config", "TOKEN=t",
	}
	if !slices.Equal(got, want) {
		t.Errorf("programEnv = %q, want %q", got, want)
	}
}
func TestCapped(t *testing.T) {
	c := &capped{limit: 5}
	c.Write([]byte("abc"))
	c.Write([]byte("defgh"))
	c.Write([]byte("ij"))
	if c.String() != "abcde" || c.dropped != 5 {
		t.Errorf("capped = %q dropped %d, want %q dropped 5", c.String(), c.dropped, "abcde")
	}
}
