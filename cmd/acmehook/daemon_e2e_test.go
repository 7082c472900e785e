package main

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
)

// waitFor polls cond every 20ms until it holds, failing the test after 30s.
func waitFor(t *testing.T, what string, cond func() bool, log *sdktest.LogBuffer) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; daemon log:\n%s", what, log)
		}
	}
}

// TestE2EDaemon runs "acmehook daemon" as a user would and signals it:
// it issues the configured certificate, keeps its configuration when
// SIGHUP brings an invalid one, issues a certificate added by a valid
// reload, and on SIGTERM, with a validation in flight, cleans the challenge
// up and exits 0 with "daemon stopping", no error logged, no failed event
// and no backoff recorded.
func TestE2EDaemon(t *testing.T) {
	s := newSite(t)
	cert := func(name, host, extra string) string {
		return fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [%q]\nsolver = \"webroot\"\nscripts = [\"events.lua\"]\n%s", name, host, extra)
	}
	one := cert("one", "one.daemon.example.com", "")
	s.write(one)
	cmd := s.command("daemon")
	var out sdktest.LogBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	signal := func(sig syscall.Signal) {
		t.Helper()
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatalf("signalling the daemon: %v", err)
		}
	}
	has := func(name string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(s.work.Events, name+".json"))
			return err == nil
		}
	}
	logged := func(msg string, n int) func() bool {
		return func() bool { return strings.Count(out.String(), msg) >= n }
	}

	waitFor(t, "the first certificate", has("one.issued"), &out)
	s.stored("one", []string{"one.daemon.example.com"})
	waitFor(t, "the daemon to sleep", logged("msg=\"next check\"", 1), &out)

	// An invalid configuration is refused; the daemon goes on with the old.
	if err := os.WriteFile(s.config, []byte(s.text+"[[certificate]]\nname = \"broken\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	signal(syscall.SIGHUP)
	waitFor(t, "the invalid reload to be refused", logged("keeping the previous one", 1), &out)
	waitFor(t, "the daemon to sleep again", logged("msg=\"next check\"", 2), &out)

	// A valid one is taken: the added certificates are issued at once.
	// Validations of "three" are held, so it is in flight when SIGTERM
	// comes (self_check = false: the challenge is answered, and the hold
	// catches the CA's validation).
	hd := holds.hold(t, "three.daemon.example.com")
	defer hd.Release()
	s.write(one + cert("two", "two.daemon.example.com", "") + cert("three", "three.daemon.example.com", "self_check = false\n"))
	signal(syscall.SIGHUP)
	waitFor(t, "the reload", logged("configuration reloaded", 1), &out)
	waitFor(t, "the added certificate", has("two.issued"), &out)
	s.stored("two", []string{"two.daemon.example.com"})
	if !hd.Arrived() {
		t.Fatalf("the validation of three never arrived; daemon log:\n%s", &out)
	}

	mark := len(out.String())
	signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v, want status 0\n%s", err, &out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon did not stop on SIGTERM; log:\n%s", &out)
	}
	tail := out.String()[mark:]
	if !strings.Contains(tail, "msg=\"daemon stopping\"") || strings.Contains(tail, "level=ERROR") {
		t.Errorf("log after SIGTERM: want \"daemon stopping\" and no error\n%s", tail)
	}
	if !strings.Contains(tail, "order abandoned") {
		t.Errorf("log after SIGTERM does not say the in-flight order was abandoned:\n%s", tail)
	}
	s.event("three.challenge-cleanup.three.daemon.example.com")
	if left, err := filepath.Glob(filepath.Join(webRoot, ".well-known", "acme-challenge", "*")); err != nil || len(left) != 0 {
		t.Errorf("challenge files left after SIGTERM: %v %v", left, err)
	}
	if _, err := os.Stat(filepath.Join(s.work.Events, "three.failed.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed raised for the abandoned order (stat: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(s.work.Dir, "storage", "certificates", "three", "current")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("three has a current certificate after SIGTERM (stat: %v)", err)
	}
	var meta struct {
		Renewal map[string]any `json:"renewal"`
	}
	if b, err := os.ReadFile(filepath.Join(s.work.Dir, "storage", "certificates", "three", "meta.json")); err == nil {
		if err := json.Unmarshal(b, &meta); err != nil {
			t.Fatal(err)
		}
	}
	if meta.Renewal["consecutive_failures"] != nil || meta.Renewal["retry_at"] != nil {
		t.Errorf("three's renewal state after SIGTERM = %v, want no failure or backoff", meta.Renewal)
	}
}

// TestE2ERevoke revokes with the binary for keyCompromise, signed by the
// certificate's key: Pebble reports it revoked with the reason, revoke
// reaches the script, the key is moved aside (0600), explain says the
// certificate is revoked and due, and the next run replaces it with a new
// key although reuse_key is set.
func TestE2ERevoke(t *testing.T) {
	s := newSite(t)
	s.write("[[certificate]]\nname = \"rv\"\ndomains = [\"rv.e2e.example.com\"]\nsolver = \"webroot\"\nreuse_key = true\nscripts = [\"events.lua\"]\n")
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("first run: %s", o)
	}
	old, _ := s.stored("rv", []string{"rv.e2e.example.com"})
	serial := old.SerialNumber.Text(16)

	o := s.acmehook("revoke", "rv", "--reason", "keyCompromise", "--with-cert-key", "--yes")
	if o.code != 0 || !strings.Contains(o.stdout, "rv: serial "+serial+" revoked (keyCompromise)") || !strings.Contains(o.stdout, "key moved aside to ") {
		t.Fatalf("revoke: want exit 0, the serial revoked and the key moved aside\n%s", o)
	}
	if st := pebble.CertStatus(t, serial); st["Status"] != "Revoked" || st["Reason"] != float64(1) {
		t.Errorf("Pebble's status = %v, want Revoked with reason 1", st)
	}
	if ev := s.event("rv.revoke"); ev["revocation_reason"] != float64(1) || ev["serial"] != serial {
		t.Errorf("revoke event = reason %v serial %v, want 1 %s", ev["revocation_reason"], ev["serial"], serial)
	}
	aside, err := filepath.Glob(filepath.Join(s.work.Dir, "storage", "certificates", "rv", "aside", "*.key.pem"))
	if err != nil || len(aside) != 1 {
		t.Fatalf("keys moved aside = %v (%v), want one", aside, err)
	}
	if m := mode(t, aside[0]); m != 0o600 {
		t.Errorf("%s mode = %v, want 0600", aside[0], m)
	}
	if o := s.acmehook("explain", "rv"); o.code != 0 || !strings.Contains(o.stdout, "revoked:") || !strings.Contains(o.stdout, "due now") {
		t.Errorf("explain after revoking: want revoked and due now\n%s", o)
	}

	o = s.acmehook("run")
	if o.code != 0 || !strings.Contains(resultLine(o, "rv"), " renewed ") {
		t.Fatalf("run after revoking: want renewed\n%s", o)
	}
	leaf, _ := s.stored("rv", []string{"rv.e2e.example.com"})
	if leafKeyEqual(leaf, old.PublicKey) {
		t.Errorf("the replacement certificate uses the compromised key")
	}
	b, err := os.ReadFile(aside[0])
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s holds no PEM block", aside[0])
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	}
	if signer, ok := key.(crypto.Signer); err != nil || !ok || !leafKeyEqual(old, signer.Public()) {
		t.Errorf("%s does not hold the revoked certificate's key (%v)", aside[0], err)
	}
}

// leafKeyEqual reports whether c is for the public key pub.
func leafKeyEqual(c *x509.Certificate, pub crypto.PublicKey) bool {
	k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}
