// Package sdktest tests solver plugins as acmehook runs them: built as real
// executables, launched through plugin/host, checked from outside the way
// a CA's validation would (Check, no CA needed) and driven through a whole
// issuance against an ACME server (Issue; pebbletest starts one). It is
// public so that a vendor's own module can use it:
//
//	var binary string
//
//	func TestMain(m *testing.M) { sdktest.Main(m, "myplugin", &binary) }
//
//	func TestSolve(t *testing.T) {
//		p := sdktest.Launch(t, host.LaunchOptions{Path: binary, Config: map[string]any{...}})
//		err := sdktest.Check(ctx, p, &acme.Verifier{...}, "dns-01", acme.DNS("example.com"))
//	}
package sdktest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// Build compiles the Go main package pkg (an import path or "./dir") into
// dir/name and returns the executable's path. Call it once per test binary,
// from TestMain.
func Build(dir, name, pkg string) (string, error) {
	out := filepath.Join(dir, name)
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// Main is a TestMain for a plugin's own package: it builds the main
// package in the current directory into a temporary directory as name,
// sets *bin to the executable's path, runs the tests, removes the build and
// exits with the tests' status. A build failure is printed and fails the
// run.
func Main(m *testing.M, name string, bin *string) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", name+"-plugin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if *bin, err = Build(dir, name, "."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// Launch starts the plugin as acmehook would (host.Launch, which also
// configures it with opts.Config) and stops it when the test ends. A
// failure fails the test.
func Launch(t testing.TB, opts host.LaunchOptions) *host.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, opts)
	if err != nil {
		t.Fatalf("launching the plugin: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Check tests a plugin without any CA, as `acmehook check --solve` does:
// it presents a challenge of challengeType for id with a random token
// (Present, and Wait for a plugin that waits for propagation), checks it
// from outside the way a CA's validation would (v, an acme.Verifier aimed
// at the test's DNS and ports), and cleans it up. The error is the first
// failure, joined with CleanUp's.
func Check(ctx context.Context, p *host.Plugin, v *acme.Verifier, challengeType string, id acme.Identifier) error {
	task, err := host.SyntheticTask(id, challengeType)
	if err != nil {
		return err
	}
	s, err := solver(ctx, p, challengeType)
	if err != nil {
		return err
	}
	s.Checks = []host.Hook{func(ctx context.Context, c sdk.Challenge) error { return verify(ctx, v, c) }}
	err = s.Present(ctx, task)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), acme.CleanUpTimeout)
	defer cancel()
	return errors.Join(err, s.CleanUp(cctx, task))
}

// verify checks a presented challenge as the CA would.
func verify(ctx context.Context, v *acme.Verifier, c sdk.Challenge) error {
	id := acme.Identifier{Type: c.Identifier.Type, Value: c.Identifier.Value}
	switch c.Type {
	case acme.ChallengeHTTP01:
		return v.HTTP01(ctx, id, c.Token, c.KeyAuthorization)
	case acme.ChallengeDNS01:
		return v.DNS01(ctx, id.Value, c.KeyAuthorization)
	case acme.ChallengeTLSALPN01:
		return v.TLSALPN01(ctx, id, c.KeyAuthorization)
	}
	return fmt.Errorf("sdktest: no check for challenge type %q", c.Type)
}

// Issue obtains a certificate for ids from the ACME server behind c with a
// new account, answering every authorization's challenge of challengeType
// through the plugin with acme.Client.ObtainCertificate (the flow acmehook
// runs: Present, Wait, answer, poll, CleanUp), and returns the chain,
// verified for the names and the key.
func Issue(ctx context.Context, c *acme.Client, p *host.Plugin, challengeType string, ids []acme.Identifier) (acme.CertificateChain, error) {
	s, err := solver(ctx, p, challengeType)
	if err != nil {
		return acme.CertificateChain{}, err
	}
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return acme.CertificateChain{}, err
	}
	acct, err := c.NewAccount(ctx, acme.Account{Key: accountKey, TermsOfServiceAgreed: true}, nil)
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("creating account: %w", err)
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return acme.CertificateChain{}, err
	}
	res, err := c.ObtainCertificate(ctx, acct, acme.CertificateRequest{Identifiers: ids, Key: certKey, Solver: s})
	if err != nil {
		return acme.CertificateChain{}, err
	}
	return res.Chain, nil
}

// solver returns the plugin-backed acme.Solver answering only
// challengeType.
func solver(ctx context.Context, p *host.Plugin, challengeType string) (*host.Solver, error) {
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil {
		return nil, err
	}
	return &host.Solver{Plugin: p, Info: info, Choose: func(_ acme.Identifier, solves []string) []string {
		if slices.Contains(solves, challengeType) {
			return []string{challengeType}
		}
		return nil
	}}, nil
}

// LogBuffer collects what a logger writes, safe for the goroutines that
// relay a plugin's log lines: give Launch a logger writing to it, such as
// slog.New(slog.NewJSONHandler(buf, nil)), and read it after Close.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
