// Package sdktest helps test solver plugins as acmehook runs them: built as
// real executables, launched through the SDK, and driven through a whole
// issuance against an ACME server (Pebble in acmehook's own tests).
package sdktest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/acmehook/acmehook/acme"
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

// Issue obtains a certificate for ids from the ACME server behind c with a
// new account, solving every pending authorization with its challenge of
// type challengeType through p: Present, Wait, accept, wait for the
// authorization, CleanUp (RFC 8555 §7.4 to §7.5.1). It returns the chain.
func Issue(ctx context.Context, c *acme.Client, p *sdk.Plugin, challengeType string, ids []acme.Identifier) (acme.CertificateChain, error) {
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return acme.CertificateChain{}, err
	}
	acct, err := c.NewAccount(ctx, acme.Account{Key: accountKey, TermsOfServiceAgreed: true}, nil)
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("creating account: %w", err)
	}
	order, err := c.NewOrder(ctx, acct, acme.Order{Identifiers: ids})
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("creating order: %w", err)
	}
	for _, u := range order.Authorizations {
		if err := solve(ctx, c, p, acct, u, challengeType); err != nil {
			return acme.CertificateChain{}, err
		}
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return acme.CertificateChain{}, err
	}
	csr, err := acme.NewCSR(certKey, ids)
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("making CSR: %w", err)
	}
	order, err = c.FinalizeOrder(ctx, acct, order, csr)
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("finalizing order: %w", err)
	}
	chain, err := c.FetchCertificate(ctx, acct, order.Certificate)
	if err != nil {
		return acme.CertificateChain{}, fmt.Errorf("fetching certificate: %w", err)
	}
	return chain, nil
}

func solve(ctx context.Context, c *acme.Client, p *sdk.Plugin, acct acme.Account, url, challengeType string) (err error) {
	authz, err := c.GetAuthorization(ctx, acct, url)
	if err != nil {
		return fmt.Errorf("fetching authorization: %w", err)
	}
	if authz.Status == acme.StatusValid {
		return nil
	}
	ch, ok := authz.Challenge(challengeType)
	if !ok {
		return fmt.Errorf("authorization for %s offers no %s challenge", authz.Identifier.Value, challengeType)
	}
	pc, err := sdk.NewChallenge(authz, ch, acct.Key.Public())
	if err != nil {
		return err
	}
	defer func() {
		if _, cerr := p.CleanUp(ctx, &sdk.CleanUpRequest{Challenge: pc}); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: pc}); err != nil {
		return err
	}
	if _, err := p.Wait(ctx, &sdk.WaitRequest{Challenge: pc}); err != nil {
		return err
	}
	if _, err := c.AcceptChallenge(ctx, acct, ch); err != nil {
		return fmt.Errorf("accepting challenge: %w", err)
	}
	if _, err := c.WaitAuthorization(ctx, acct, url); err != nil {
		return fmt.Errorf("waiting for authorization of %s: %w", authz.Identifier.Value, err)
	}
	return nil
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
