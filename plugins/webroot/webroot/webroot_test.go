package webroot

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk"
)

const (
	token    = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	keyAuth  = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	token2   = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	keyAuth2 = token2 + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

// ledgerName matches a ledger's name.
var ledgerName = regexp.MustCompile(`\.acmehook-webroot-[A-Z2-7]{26}\.ledger`)

func challenge(domain, tok, ka string) sdk.Challenge {
	return sdk.Challenge{Type: acme.ChallengeHTTP01, Identifier: sdk.Identifier{Type: "dns", Value: domain}, Token: tok, KeyAuthorization: ka}
}

func configured(t *testing.T, cfg map[string]any) *Solver {
	t.Helper()
	s, err := New(sdk.Config{Values: cfg})
	if err != nil {
		t.Fatalf("New(%v) = %v", cfg, err)
	}
	return s
}

// listTree returns every path under root, relative.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	return out
}

func TestPresentCleanUp(t *testing.T) {
	root := t.TempDir()
	s := configured(t, map[string]any{"root": root})
	ctx := context.Background()
	c1, c2 := challenge("example.com", token, keyAuth), challenge("www.example.com", token2, keyAuth2)
	for _, c := range []sdk.Challenge{c1, c2} {
		if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
			t.Fatalf("Present(%s) = %v", c.Identifier.Value, err)
		}
	}
	dir := filepath.Join(root, ".well-known", "acme-challenge")
	for _, c := range []sdk.Challenge{c1, c2} {
		path := filepath.Join(dir, c.Token)
		b, err := os.ReadFile(path)
		if err != nil || string(b) != c.KeyAuthorization {
			t.Errorf("ReadFile(%s) = %q, %v, want %q", path, b, err, c.KeyAuthorization)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("mode of %s = %v, %v, want 0644", path, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode of %s = %v, %v, want 0755", dir, fi.Mode(), err)
	}
	// Cleaning up one challenge keeps the directory the other still uses.
	if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c1}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	// The ledger stays while a challenge is pending (see ledger).
	if got := strings.Join(listTree(t, root), " "); !ledgerName.MatchString(got) ||
		ledgerName.ReplaceAllString(got, "LEDGER") != ". .well-known .well-known/acme-challenge .well-known/acme-challenge/LEDGER .well-known/acme-challenge/"+token2 {
		t.Errorf("tree after first CleanUp = %q", got)
	}
	if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c2}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	// Cleaning up twice is not an error.
	if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c2}); err != nil {
		t.Errorf("second CleanUp = %v", err)
	}
	// The directories and the ledger wait for the next challenge for
	// Linger (TestLinger); Close removes them.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := listTree(t, root); len(got) != 1 {
		t.Errorf("tree after CleanUp and Close = %q, want the root alone (created directories removed)", got)
	}
}

// TestLinger: after the last CleanUp in a directory, its ledger and the
// directories the plugin made stay for Linger; a Present meanwhile uses
// them again (nothing is created: the same ledger); once Linger has passed
// with nothing presented they are removed, without Close.
func TestLinger(t *testing.T) {
	defer func(d time.Duration) { Linger = d }(Linger)
	Linger = 300 * time.Millisecond
	root := t.TempDir()
	s := configured(t, map[string]any{"root": root})
	defer s.Close()
	ctx := context.Background()
	tree := func() string { return strings.Join(listTree(t, root), " ") }
	c := challenge("example.com", token, keyAuth)
	if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	first := tree()
	if !ledgerName.MatchString(first) || ledgerName.ReplaceAllString(first, "LEDGER") != ". .well-known .well-known/acme-challenge .well-known/acme-challenge/LEDGER" {
		t.Fatalf("tree right after the last CleanUp = %q, want the directories and the ledger", first)
	}
	c2 := challenge("www.example.com", token2, keyAuth2)
	if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c2}); err != nil {
		t.Fatal(err)
	}
	if got := tree(); got != first {
		t.Errorf("tree after a second challenge within Linger = %q, want %q (the same ledger)", got, first)
	}
	deadline := time.Now().Add(10 * time.Second)
	for tree() != "." {
		if time.Now().After(deadline) {
			t.Fatalf("tree 10 s after the last CleanUp = %q, want the root alone", tree())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And the next challenge makes them again.
	if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	if got := tree(); !strings.Contains(got, ".well-known/acme-challenge/"+token) {
		t.Errorf("tree after Present = %q", got)
	}
}

func TestExistingDirectoriesKept(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, ".well-known", "acme-challenge")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := configured(t, map[string]any{"root": root})
	c := challenge("example.com", token, keyAuth)
	if _, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CleanUp(context.Background(), &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := listTree(t, root); len(got) != 3 {
		t.Errorf("tree after CleanUp and Close = %q, want the existing directories kept", got)
	}
}

func TestRootPerDomain(t *testing.T) {
	def, other := t.TempDir(), t.TempDir()
	s := configured(t, map[string]any{"root": def, "roots": map[string]any{"Other.Example.": other}})
	for domain, root := range map[string]string{"example.com": def, "other.example": other} {
		c := challenge(domain, token, keyAuth)
		if _, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: c}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, ".well-known", "acme-challenge", token)); err != nil {
			t.Errorf("Present(%s): %v, want the file under %s", domain, err, root)
		}
	}
	noDefault := configured(t, map[string]any{"roots": map[string]any{"other.example": other}})
	if _, err := noDefault.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com", token, keyAuth)}); err == nil {
		t.Error("Present for a domain without root = nil, want error")
	}
}

// TestLeadingDashToken: a token may begin with '-' (it is base64url); it
// names its file like any other.
func TestLeadingDashToken(t *testing.T) {
	root := t.TempDir()
	s := configured(t, map[string]any{"root": root})
	tok := "-rf_" + strings.Repeat("A", 39)
	c := challenge("example.com", tok, tok+".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI")
	if _, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatalf("Present = %v", err)
	}
	path := filepath.Join(root, ".well-known", "acme-challenge", tok)
	if b, err := os.ReadFile(path); err != nil || string(b) != c.KeyAuthorization {
		t.Errorf("ReadFile(%s) = %q, %v, want %q", path, b, err, c.KeyAuthorization)
	}
	if _, err := s.CleanUp(context.Background(), &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatalf("CleanUp = %v", err)
	}
	s.Close()
	if got := listTree(t, root); len(got) != 1 {
		t.Errorf("tree after CleanUp and Close = %q, want the root alone", got)
	}
}

// TestHostileValues: no token or name that is not a plain base64url token
// reaches a path; nothing appears under (or beside) the root.
func TestHostileValues(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "root")
	os.Mkdir(root, 0o755)
	s := configured(t, map[string]any{"root": root})
	tests := []struct{ name, token, keyAuth, typ string }{
		{"dotdot", "../../../../../etc/passwdAAAAAAAAAAAAAA", "", "http-01"},
		{"slash", "abcdefghijklmnopqrstuv/wxyz", "", "http-01"},
		{"backslash", `abcdefghijklmnopqrstuv\wxyz`, "", "http-01"},
		{"dot", "abcdefghijklmnopqrstuv.wxyz", "", "http-01"},
		{"shell", "abcdefghijklmnopqrstuv;rm -rf $HOME`id`", "", "http-01"},
		{"newline", "abcdefghijklmnopqrstuv\nwxyz", "", "http-01"},
		{"nul", "abcdefghijklmnopqrstuv\x00wxyz", "", "http-01"},
		{"short", "abc", "", "http-01"},
		{"empty", "", "", "http-01"},
		{"bad key authorization", token, "something else/../x", "http-01"},
		{"key authorization of another token", token, keyAuth2, "http-01"},
		{"dns-01", token, keyAuth, "dns-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := challenge("example.com", tt.token, tt.keyAuth)
			c.Type = tt.typ
			if c.KeyAuthorization == "" {
				c.KeyAuthorization = tt.token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
			}
			if _, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: c}); err == nil {
				t.Errorf("Present(token %q) = nil, want error", tt.token)
			}
			if got := listTree(t, parent); len(got) != 2 {
				t.Errorf("tree after Present(token %q) = %q, want nothing created", tt.token, got)
			}
			if tt.typ == "http-01" && tt.token != token {
				if _, err := s.CleanUp(context.Background(), &sdk.CleanUpRequest{Challenge: c}); !errors.Is(err, acme.ErrInvalidToken) {
					t.Errorf("CleanUp(token %q) = %v, want %v", tt.token, err, acme.ErrInvalidToken)
				}
			}
		})
	}
}

func TestSymlinkEscapeRefused(t *testing.T) {
	parent := t.TempDir()
	root, outside := filepath.Join(parent, "root"), filepath.Join(parent, "outside")
	os.Mkdir(root, 0o755)
	os.Mkdir(outside, 0o755)
	if err := os.Symlink(outside, filepath.Join(root, ".well-known")); err != nil {
		t.Fatal(err)
	}
	s := configured(t, map[string]any{"root": root})
	_, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: challenge("example.com", token, keyAuth)})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Fatalf("Present through a symlink out of the root = %v, want %v", err, ErrOutsideRoot)
	}
	if got := listTree(t, outside); len(got) != 1 {
		t.Errorf("tree outside the root after Present = %q, want nothing created there", got)
	}
}

// TestConcurrentChallenges: challenges presented and cleaned up at once
// through one Solver all succeed, and the directories go with the last.
func TestConcurrentChallenges(t *testing.T) {
	root := t.TempDir()
	s := configured(t, map[string]any{"root": root})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 200 {
		wg.Go(func() {
			tok := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "concurrent-token-%04d", i))
			c := challenge(fmt.Sprintf("c%d.example.com", i), tok, tok+".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI")
			if _, err := s.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
				errs <- fmt.Errorf("Present(%d) = %w", i, err)
			}
			if _, err := s.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
				errs <- fmt.Errorf("CleanUp(%d) = %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s.Close()
	if got := listTree(t, root); len(got) != 1 {
		t.Errorf("tree after every CleanUp and Close = %q, want the root alone", got)
	}
}

// TestRelativeRoot: relative roots are resolved against the working
// directory when the plugin is configured, not when a challenge comes.
func TestRelativeRoot(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"www", "shop"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	s := configured(t, map[string]any{"root": "www", "roots": map[string]any{"shop.example": "./shop"}})
	t.Chdir(t.TempDir())
	for domain, root := range map[string]string{"example.com": "www", "shop.example": "shop"} {
		c := challenge(domain, token, keyAuth)
		if _, err := s.Present(context.Background(), &sdk.PresentRequest{Challenge: c}); err != nil {
			t.Fatalf("Present(%s) = %v", domain, err)
		}
		path := filepath.Join(dir, root, ".well-known", "acme-challenge", token)
		if b, err := os.ReadFile(path); err != nil || string(b) != keyAuth {
			t.Errorf("ReadFile(%s) = %q, %v, want %q", path, b, err, keyAuth)
		}
		if _, err := s.CleanUp(context.Background(), &sdk.CleanUpRequest{Challenge: c}); err != nil {
			t.Fatalf("CleanUp(%s) = %v", domain, err)
		}
	}
}

func TestNew(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{}, "root or roots is required"},
		{map[string]any{"root": "relative/dir"}, "root: stat " + filepath.Join(wd, "relative/dir") + ": no such file or directory"},
		{map[string]any{"root": "/nonexistent/dir"}, "root: stat /nonexistent/dir: no such file or directory"},
		{map[string]any{"root": file}, "root: " + file + " is not a directory"},
		{map[string]any{"roots": map[string]any{"a.example": "x"}}, "roots.a.example: stat " + filepath.Join(wd, "x") + ": no such file or directory"},
		{map[string]any{"roots": map[string]any{"a.example": ""}}, "roots.a.example: empty path"},
		{map[string]any{"rot": "/tmp"}, `unknown field "rot"`},
	}
	for _, tt := range tests {
		_, err := New(sdk.Config{Values: tt.cfg})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}
