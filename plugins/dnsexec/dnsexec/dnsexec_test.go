package dnsexec

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/plugin/sdk"
)

func TestConfigure(t *testing.T) {
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
		{map[string]any{"program": prog, "resolvers": res, "env": map[string]any{"ACMEHOOK_DOMAIN": "x"}}, `env: invalid variable name "ACMEHOOK_DOMAIN"`},
		{map[string]any{"program": prog, "resolvers": res, "timeout": "-1s"}, "must be positive"},
		{map[string]any{"program": prog, "resolvers": res, "output_limit": 0}, "output_limit must be positive"},
		{map[string]any{"program": prog, "resolvers": res, "propagation_timeout": "soon"}, `time: invalid duration "soon"`},
		{map[string]any{"program": prog, "resolver": res}, `unknown field "resolver"`},
	}
	for _, tt := range tests {
		_, err := (&Solver{}).Configure(context.Background(), &sdk.ConfigureRequest{Config: tt.cfg})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Configure(%v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
	s := &Solver{}
	if _, err := s.Configure(context.Background(), &sdk.ConfigureRequest{Config: map[string]any{"program": prog, "resolvers": []any{"127.0.0.1", "[::1]"}}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.config().Resolvers, " "); got != "127.0.0.1:53 [::1]:53" {
		t.Errorf("resolvers = %s, want port 53 added", got)
	}
	// A relative program is made absolute against the working directory.
	t.Chdir(dir)
	if _, err := s.Configure(context.Background(), &sdk.ConfigureRequest{Config: map[string]any{"program": "prog", "resolvers": res}}); err != nil {
		t.Fatal(err)
	}
	if got := s.config().Program; got != prog {
		t.Errorf("program = %s, want %s", got, prog)
	}
}
