package acme_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// pebble is the Pebble shared by the tests that need no special options
// (no rejected nonces, no authorization reuse).
var pebble *pebbletest.Server

func TestMain(m *testing.M) {
	s, err := pebbletest.New(pebbletest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pebble = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

// publishTXT sets a TXT record in the test DNS server, which every Pebble
// of the process shares (see plugin/sdk/sdktest/pebbletest).
func publishTXT(name, value string) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	pebble.DNS.AddDNSTXTRecord(name, value)
}

// startPebble starts a Pebble for one test.
func startPebble(t testing.TB, opts pebbletest.Options) *pebbletest.Server {
	return pebbletest.Start(t, opts)
}

func newClient(s *pebbletest.Server) *acme.Client {
	return &acme.Client{DirectoryURL: s.DirectoryURL, HTTPClient: s.HTTPClient()}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newAccount(t testing.TB, c *acme.Client) acme.Account {
	t.Helper()
	acct, err := c.NewAccount(testCtx(t), acme.Account{Key: newKey(t), TermsOfServiceAgreed: true}, nil)
	if err != nil {
		t.Fatalf("NewAccount: %v", err)
	}
	return acct
}

// solver makes the CA able to validate one challenge of authz and returns
// that challenge.
type solver func(t testing.TB, s *pebbletest.Server, acct acme.Account, authz acme.Authorization) acme.Challenge

func keyAuth(t testing.TB, acct acme.Account, ch acme.Challenge) string {
	t.Helper()
	ka, err := acme.KeyAuthorization(ch.Token, acct.Key.Public())
	if err != nil {
		t.Fatalf("KeyAuthorization: %v", err)
	}
	return ka
}

func pick(t testing.TB, authz acme.Authorization, typ string) acme.Challenge {
	t.Helper()
	ch, ok := authz.Challenge(typ)
	if !ok {
		t.Fatalf("authorization of %s offers no %s challenge: %+v", authz.Identifier, typ, authz.Challenges)
	}
	return ch
}

// dns01 sets the TXT record in the test DNS server.
func dns01(t testing.TB, s *pebbletest.Server, acct acme.Account, authz acme.Authorization) acme.Challenge {
	ch := pick(t, authz, acme.ChallengeDNS01)
	name := acme.DNS01TXTRecordName(authz.Identifier.Value) + "."
	publishTXT(name, acme.DNS01TXTRecord(keyAuth(t, acct, ch)))
	t.Cleanup(func() { s.DNS.DeleteDNSTXTRecord(name) })
	return ch
}

// issue runs one issuance for order with solve and returns the chain and
// the certificate key.
func issue(t testing.TB, c *acme.Client, s *pebbletest.Server, acct acme.Account, order acme.Order, solve solver) (acme.CertificateChain, crypto.Signer) {
	t.Helper()
	ctx := testCtx(t)
	o, err := c.NewOrder(ctx, acct, order)
	if err != nil {
		t.Fatalf("NewOrder: %v", err)
	}
	for _, u := range o.Authorizations {
		authz, err := c.GetAuthorization(ctx, acct, u)
		if err != nil {
			t.Fatalf("GetAuthorization: %v", err)
		}
		if authz.Status == acme.StatusValid {
			continue
		}
		ch := solve(t, s, acct, authz)
		if _, err := c.AcceptChallenge(ctx, acct, ch); err != nil {
			t.Fatalf("AcceptChallenge: %v", err)
		}
		if _, err := c.WaitAuthorization(ctx, acct, u); err != nil {
			t.Fatalf("WaitAuthorization: %v", err)
		}
	}
	certKey := newKey(t)
	csr, err := acme.NewCSR(certKey, order.Identifiers)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	o, err = c.FinalizeOrder(ctx, acct, o, csr)
	if err != nil {
		t.Fatalf("FinalizeOrder: %v", err)
	}
	if o.Status != acme.StatusValid || o.Certificate == "" {
		t.Fatalf("FinalizeOrder = status %q certificate %q, want valid with a URL", o.Status, o.Certificate)
	}
	chain, err := c.FetchCertificate(ctx, acct, o.Certificate)
	if err != nil {
		t.Fatalf("FetchCertificate: %v", err)
	}
	if !chain.Certificates[0].PublicKey.(*ecdsa.PublicKey).Equal(certKey.Public()) {
		t.Fatal("issued certificate is not for the CSR's key")
	}
	return chain, certKey
}

// verifyChain checks that chain leads to one of Pebble's roots and covers
// every identifier.
func verifyChain(t testing.TB, s *pebbletest.Server, chain acme.CertificateChain, roots int, ids []acme.Identifier) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain.Certificates[1:] {
		inter.AddCert(c)
	}
	leaf := chain.Certificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.Roots(t, roots), Intermediates: inter}); err != nil {
		t.Fatalf("issued chain does not verify to Pebble's roots: %v", err)
	}
	for _, id := range ids {
		var err error
		if id.Type == acme.IdentifierIP {
			err = leaf.VerifyHostname(id.Value)
		} else {
			err = leaf.VerifyHostname(strings.Replace(id.Value, "*", "anything", 1))
		}
		if err != nil {
			t.Errorf("certificate does not cover %s: %v", id, err)
		}
	}
}

func TestIssueDNS01(t *testing.T) {
	c := newClient(pebble)
	acct := newAccount(t, c)
	tests := []struct {
		name string
		ids  []acme.Identifier
	}{
		{"single name", []acme.Identifier{acme.DNS("dns01.example.com")}},
		{"wildcard and apex", []acme.Identifier{acme.DNS("*.wild.example.com"), acme.DNS("wild.example.com")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: tt.ids}, dns01)
			verifyChain(t, pebble, chain, 0, tt.ids)
			if got := chain.Certificates[0].DNSNames; !slices.Equal(sorted(got), sorted(values(tt.ids))) {
				t.Errorf("DNS SANs = %v, want %v", got, values(tt.ids))
			}
		})
	}
}

func values(ids []acme.Identifier) []string {
	var out []string
	for _, id := range ids {
		out = append(out, id.Value)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestIssueProfile(t *testing.T) {
	c := newClient(pebble)
	dir, err := c.Directory(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dir.Meta.Profiles["shortlived"]; !ok {
		t.Fatalf("directory profiles = %v, want shortlived", dir.Meta.Profiles)
	}
	acct := newAccount(t, c)
	ids := []acme.Identifier{acme.DNS("profile.example.com")}
	chain, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: ids, Profile: "shortlived"}, dns01)
	leaf := chain.Certificates[0]
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 7*24*time.Hour {
		t.Errorf("shortlived certificate lives %s, want at most 6 days", life)
	}

	_, err = c.NewOrder(testCtx(t), acct, acme.Order{Identifiers: ids, Profile: "nosuchprofile"})
	var p *acme.Problem
	if !errors.As(err, &p) || p.Type != acme.ProblemInvalidProfile {
		t.Errorf("NewOrder with unknown profile = %v, want an invalidProfile problem", err)
	}
}

// TestIssueValidity asks for notBefore and notAfter (RFC 8555 §7.4), which
// Pebble echoes in the order and puts in the certificate.
func TestIssueValidity(t *testing.T) {
	c := newClient(pebble)
	acct := newAccount(t, c)
	nb := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	na := nb.Add(50 * time.Hour)
	ids := []acme.Identifier{acme.DNS("validity.example.com")}
	o, err := c.NewOrder(testCtx(t), acct, acme.Order{Identifiers: ids, NotBefore: nb, NotAfter: na})
	if err != nil {
		t.Fatal(err)
	}
	if !o.NotBefore.Equal(nb) || !o.NotAfter.Equal(na) {
		t.Errorf("order validity = %s .. %s, want %s .. %s", o.NotBefore, o.NotAfter, nb, na)
	}
	chain, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: ids, NotBefore: nb, NotAfter: na}, dns01)
	if leaf := chain.Certificates[0]; !leaf.NotBefore.Equal(nb) || !leaf.NotAfter.Equal(na) {
		t.Errorf("certificate validity = %s .. %s, want %s .. %s", leaf.NotBefore, leaf.NotAfter, nb, na)
	}
}

func TestDirectoryMeta(t *testing.T) {
	s := startPebble(t, pebbletest.Options{EABRequired: true, EABKeys: map[string]string{"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}})
	c := newClient(s)
	dir, err := c.Directory(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !dir.Meta.ExternalAccountRequired || dir.Meta.TermsOfService == "" || dir.RenewalInfo == "" || dir.KeyChange == "" {
		t.Errorf("Directory() = %+v, want EAB required, terms of service, renewalInfo and keyChange", dir)
	}
}
