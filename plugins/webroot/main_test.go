package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// binary is this plugin, built once by TestMain.
var binary string

func TestMain(m *testing.M) { sdktest.Main(m, "webroot", &binary) }

func launch(t *testing.T, root string) *host.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "webroot", Path: binary, Config: map[string]any{"root": root}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestServedByWebServer runs the plugin as a subprocess and fetches the
// challenge from a real HTTP server serving the root.
func TestServedByWebServer(t *testing.T) {
	root := t.TempDir()
	p := launch(t, root)
	web := httptest.NewServer(http.FileServer(http.Dir(root)))
	defer web.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil || info.Name != "webroot" || info.ChallengeTypes[0] != "http-01" || info.WaitsForPropagation {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	c := sdk.Challenge{
		Type:             "http-01",
		Identifier:       sdk.Identifier{Type: "dns", Value: "example.com"},
		Token:            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
		KeyAuthorization: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
	}
	get := func() (int, string) {
		resp, err := web.Client().Get(web.URL + acme.HTTP01PathPrefix + c.Token)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != 200 || body != c.KeyAuthorization {
		t.Errorf("GET after Present = %d %q, want 200 %q", code, body, c.KeyAuthorization)
	}
	if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(); code != 404 {
		t.Errorf("GET after CleanUp = %d, want 404", code)
	}
	// The directories wait for the next challenge (webroot.Linger), and go
	// when the plugin stops.
	defer func() {
		p.Close()
		if _, err := os.Stat(filepath.Join(root, ".well-known")); !os.IsNotExist(err) {
			t.Errorf("stat .well-known after CleanUp and the plugin's stop = %v, want it removed", err)
		}
	}()
	// A hostile token is refused by the subprocess with a clear error.
	c.Token = "../../../../tmp/x-AAAAAAAAAAAAAAAAAAAAAA"
	_, err = p.Present(ctx, &sdk.PresentRequest{Challenge: c})
	if want := "plugin webroot: present example.com: acme: challenge token is not base64url: byte '.' at offset 0"; err == nil || err.Error() != want {
		t.Errorf("Present(hostile token) = %v, want %q", err, want)
	}
}

// TestRelativeRootInDir: a relative root is relative to LaunchOptions.Dir,
// the plugin's working directory, wherever the host runs.
func TestRelativeRootInDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "site", "html"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, host.LaunchOptions{Name: "webroot", Path: binary, Dir: dir, Config: map[string]any{"root": "site/html"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := sdk.Challenge{
		Type:             "http-01",
		Identifier:       sdk.Identifier{Type: "dns", Value: "example.com"},
		Token:            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
		KeyAuthorization: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
	}
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "site", "html", ".well-known", "acme-challenge", c.Token)
	if b, err := os.ReadFile(path); err != nil || string(b) != c.KeyAuthorization {
		t.Errorf("ReadFile(%s) = %q, %v, want %q", path, b, err, c.KeyAuthorization)
	}
	// In another working directory the same configuration names nothing.
	_, err = host.Launch(ctx, host.LaunchOptions{Name: "webroot", Path: binary, Dir: t.TempDir(), Config: map[string]any{"root": "site/html"}})
	if err == nil || !strings.Contains(err.Error(), "root: stat ") {
		t.Errorf("Launch in another directory = %v, want the root not found", err)
	}
}

// TestIssueWithPebble: Pebble validates http-01 against a web server on its
// HTTP port serving the root the plugin writes to.
func TestIssueWithPebble(t *testing.T) {
	pebble := pebbletest.Start(t, pebbletest.Options{})
	root := t.TempDir()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort)))
	if err != nil {
		t.Fatal(err)
	}
	web := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.FileServer(http.Dir(root))}}
	web.Start()
	defer web.Close()
	p := launch(t, root)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	ids := []acme.Identifier{acme.DNS("webroot.example.com"), acme.DNS("www.webroot.example.com")}
	chain, err := sdktest.Issue(ctx, c, p, acme.ChallengeHTTP01, ids)
	if err != nil {
		t.Fatalf("Issue = %v", err)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain.Certificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain.Certificates[0].Verify(x509.VerifyOptions{Roots: pebble.Roots(t, 0), Intermediates: inter, DNSName: "www.webroot.example.com"}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
	p.Close()
	if _, err := os.Stat(filepath.Join(root, ".well-known")); !os.IsNotExist(err) {
		t.Errorf("stat .well-known after issuance and the plugin's stop = %v, want it cleaned up", err)
	}
}

// TestCrashLeftoversRemoved: a plugin process killed with SIGKILL while
// its challenges are presented leaves their files; the next plugin started
// on the root removes exactly those (and the directories that process
// made), not a file whose content is no longer the key authorization, not
// a token-like file no ledger lists, and not a live process's challenge.
func TestCrashLeftoversRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const thumb = ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	ch := func(tok string) sdk.Challenge {
		return sdk.Challenge{Type: "http-01", Identifier: sdk.Identifier{Type: "dns", Value: "example.com"}, Token: tok, KeyAuthorization: tok + thumb}
	}
	present := func(p *host.Plugin, toks ...string) {
		t.Helper()
		for _, tok := range toks {
			if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: ch(tok)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const (
		crashed  = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
		replaced = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
		live     = "Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV6enp6enp6eno"
		unlisted = "dW5saXN0ZWR1bmxpc3RlZHVubGlzdGVkdW5saXN0ZWQ"
	)

	t.Run("killed alone", func(t *testing.T) {
		root := t.TempDir()
		a := launch(t, root)
		present(a, crashed)
		kill(t, root)
		launch(t, root)
		if got := listDir(t, root); len(got) != 0 {
			t.Errorf("root after the next start = %q, want it as it was before the killed run", got)
		}
	})

	t.Run("beside a live process", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, ".well-known", "acme-challenge")
		a := launch(t, root)
		present(a, crashed, replaced)
		c := launch(t, root)
		present(c, live)
		kill(t, root, crashed) // the process holding crashed
		if err := os.WriteFile(filepath.Join(dir, replaced), []byte("the user's own content"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, unlisted), []byte(unlisted+thumb), 0o644); err != nil {
			t.Fatal(err)
		}
		// As a crash in the middle of writing crashed's file leaves it.
		halfWritten := filepath.Join(dir, ".acmehook-"+crashed+"-123456")
		if err := os.WriteFile(halfWritten, []byte(crashed[:10]), 0o644); err != nil {
			t.Fatal(err)
		}
		launch(t, root)
		for tok, want := range map[string]bool{crashed: false, replaced: true, live: true, unlisted: true} {
			if _, err := os.Stat(filepath.Join(dir, tok)); (err == nil) != want {
				t.Errorf("%s after the next start: %v, want kept %t", tok, err, want)
			}
		}
		if _, err := os.Stat(halfWritten); !os.IsNotExist(err) {
			t.Errorf("the crashed write's temporary file after the next start: %v, want removed", err)
		}
		if ledgers, _ := filepath.Glob(filepath.Join(dir, ".acmehook-webroot-*")); len(ledgers) != 1 {
			t.Errorf("ledgers %q, want the live process's alone", ledgers)
		}
		if _, err := c.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: ch(live)}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if got := listDir(t, dir); strings.Join(got, " ") != strings.Join([]string{unlisted, replaced}, " ") {
			t.Errorf("challenge directory at the end = %q, want the two files that are not acmehook's", got)
		}
	})
}

// kill sends SIGKILL to the plugin process that holds a ledger under root
// (with tokens: the one whose ledger lists the first of them) and waits
// until it is gone.
func kill(t *testing.T, root string, tokens ...string) {
	t.Helper()
	ledgers, _ := filepath.Glob(filepath.Join(root, ".well-known", "acme-challenge", ".acmehook-webroot-*"))
	victims := map[int]bool{}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		target, _ := os.Readlink(fd)
		if !slices.Contains(ledgers, target) {
			continue
		}
		if b, _ := os.ReadFile(target); len(tokens) > 0 && !strings.Contains(string(b), "token "+tokens[0]+"\n") {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
		victims[pid] = true
	}
	if len(victims) != 1 {
		t.Fatalf("processes holding a ledger under %s: %v, want 1", root, victims)
	}
	for pid := range victims {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("plugin %d still running 5 s after SIGKILL", pid)
			}
		}
	}
}

// listDir returns the names in dir, sorted (none if it is missing).
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// BenchmarkPresentCleanUp is one http-01 challenge written (with fsync) and
// removed through the plugin process.
func BenchmarkPresentCleanUp(b *testing.B) {
	root := b.TempDir()
	p, err := host.Launch(context.Background(), host.LaunchOptions{Name: "webroot", Path: binary, Config: map[string]any{"root": root}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	c := sdk.Challenge{
		Type:             "http-01",
		Identifier:       sdk.Identifier{Type: "dns", Value: "example.com"},
		Token:            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
		KeyAuthorization: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
	}
	for b.Loop() {
		if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: c}); err != nil {
			b.Fatal(err)
		}
		if _, err := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: c}); err != nil {
			b.Fatal(err)
		}
	}
}
