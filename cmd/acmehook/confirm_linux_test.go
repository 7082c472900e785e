package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal: what the test
// writes to controller, acmehook reads from terminal, a real terminal.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { controller.Close() })
	fd := int(controller.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { terminal.Close() })
	return controller, terminal
}

// TestRevokeAsksOnATerminal runs revoke with a terminal as stdin: it asks,
// "n" (or nothing) leaves the certificate alone with exit 2, "y" goes on to
// the revocation (which here fails: nothing was issued). Off a terminal it
// refuses without --yes, without asking.
func TestRevokeAsksOnATerminal(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "acmehook.toml")
	body := "storage = \"s\"\n[ca]\ndirectory = \"https://127.0.0.1:1/dir\"\n[plugins.w]\npath = \"/bin/true\"\n" +
		"[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\"]\nsolver = \"w\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	stdin := os.Stdin
	t.Cleanup(func() { os.Stdin = stdin })
	question := "Revoke the current certificate of www (www.example.com) at https://127.0.0.1:1/dir, reason keyCompromise? This cannot be undone. [y/N]"
	for _, tt := range []struct {
		answer string
		code   int
		stderr string
	}{
		{"n\n", exitUsage, "not revoked: not confirmed"},
		{"\n", exitUsage, "not revoked: not confirmed"},
		{"yes\n", exitFailed, "www has no certificate to revoke"},
	} {
		t.Run(fmt.Sprintf("answer %q", tt.answer), func(t *testing.T) {
			controller, terminal := openPTY(t)
			os.Stdin = terminal
			if _, err := controller.WriteString(tt.answer); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			args := []string{"--config", conf, "revoke", "www", "--reason", "keyCompromise"}
			if code := run(context.Background(), args, &stdout, &stderr); code != tt.code {
				t.Errorf("run(%q) answering %q = %d, want %d\nstderr: %s", args, tt.answer, code, tt.code, &stderr)
			}
			if !strings.Contains(stderr.String(), question) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr = %q, want the question %q and %q", &stderr, question, tt.stderr)
			}
		})
	}
	t.Run("not a terminal", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w.WriteString("y\n")
		w.Close()
		os.Stdin = r
		checkRun(t, []string{"--config", conf, "revoke", "www"}, exitUsage, "", "add --yes")
	})
}
