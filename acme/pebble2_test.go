package acme_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/acme/standalone"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// http01 serves the key authorization from acme/standalone on the port
// Pebble's VA connects to.
func http01(srv *standalone.HTTP01Server) solver {
	return func(t testing.TB, s *pebbletest.Server, acct acme.Account, authz acme.Authorization) acme.Challenge {
		ch := pick(t, authz, acme.ChallengeHTTP01)
		if err := srv.Add(ch.Token, keyAuth(t, acct, ch)); err != nil {
			t.Fatalf("HTTP01Server.Add: %v", err)
		}
		return ch
	}
}

func tlsalpn01(srv *standalone.TLSALPN01Server) solver {
	return func(t testing.TB, s *pebbletest.Server, acct acme.Account, authz acme.Authorization) acme.Challenge {
		ch := pick(t, authz, acme.ChallengeTLSALPN01)
		if err := srv.Add(authz.Identifier, keyAuth(t, acct, ch)); err != nil {
			t.Fatalf("TLSALPN01Server.Add: %v", err)
		}
		return ch
	}
}

func TestIssueHTTP01(t *testing.T) {
	srv := &standalone.HTTP01Server{ListenAddrs: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.HTTPPort))}}
	if err := srv.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := newClient(pebble)
	acct := newAccount(t, c)
	tests := []struct {
		name string
		ids  []acme.Identifier
	}{
		{"dns name", []acme.Identifier{acme.DNS("http01.example.com")}},
		{"ip address", []acme.Identifier{acme.IP(netip.MustParseAddr("127.0.0.1"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: tt.ids}, http01(srv))
			verifyChain(t, pebble, chain, 0, tt.ids)
		})
	}
}

func TestIssueTLSALPN01(t *testing.T) {
	srv := &standalone.TLSALPN01Server{ListenAddrs: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(pebble.TLSPort))}}
	if err := srv.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := newClient(pebble)
	acct := newAccount(t, c)
	ids := []acme.Identifier{acme.DNS("alpn.example.com")}
	chain, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: ids}, tlsalpn01(srv))
	verifyChain(t, pebble, chain, 0, ids)
}

func TestExternalAccountBinding(t *testing.T) {
	const kid = "kid-1"
	// A random 48-byte MAC key, base64url, as a CA would hand it out.
	macB64 := "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	mac, err := base64.RawURLEncoding.DecodeString(macB64)
	if err != nil {
		t.Fatal(err)
	}
	// HS512 needs a key of at least 64 bytes (RFC 7518 §3.2).
	mac512 := make([]byte, 64)
	rand.Read(mac512)
	s := startPebble(t, pebbletest.Options{EABRequired: true, EABKeys: map[string]string{
		kid: macB64, "kid-512": base64.RawURLEncoding.EncodeToString(mac512)}})
	c := newClient(s)
	ctx := testCtx(t)

	var p *acme.Problem
	_, err = c.NewAccount(ctx, acme.Account{Key: newKey(t), TermsOfServiceAgreed: true}, nil)
	if !errors.As(err, &p) || p.Type != acme.ProblemExternalAccountRequired {
		t.Errorf("NewAccount without EAB = %v, want externalAccountRequired", err)
	}
	wrong := slices.Clone(mac)
	wrong[0] ^= 1
	for _, eab := range []acme.ExternalAccountBinding{{KeyID: kid, Key: wrong}, {KeyID: "kid-unknown", Key: mac}} {
		_, err = c.NewAccount(ctx, acme.Account{Key: newKey(t), TermsOfServiceAgreed: true}, &eab)
		if !errors.As(err, &p) || p.Status < 400 {
			t.Errorf("NewAccount with %v = %v, want a problem", eab, err)
		}
	}
	for _, eab := range []acme.ExternalAccountBinding{
		{KeyID: kid, Key: mac},
		{KeyID: kid, Key: mac, Algorithm: "HS384"},
		{KeyID: "kid-512", Key: mac512, Algorithm: "HS512"},
	} {
		t.Run(eab.KeyID+eab.Algorithm, func(t *testing.T) {
			acct, err := c.NewAccount(ctx, acme.Account{Key: newKey(t), TermsOfServiceAgreed: true}, &eab)
			if err != nil {
				t.Fatalf("NewAccount with %v: %v", eab, err)
			}
			if acct.Status != acme.StatusValid || acct.URL == "" {
				t.Errorf("account = %+v, want valid with a URL", acct)
			}
		})
	}
}

func TestAccountLifecycle(t *testing.T) {
	c := newClient(pebble)
	ctx := testCtx(t)
	key := newKey(t)
	acct, err := c.NewAccount(ctx, acme.Account{Key: key, Contact: []string{"mailto:a@example.com"}, TermsOfServiceAgreed: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(acct.Contact, []string{"mailto:a@example.com"}) {
		t.Errorf("NewAccount contacts = %v", acct.Contact)
	}

	found, err := c.FindAccount(ctx, key)
	if err != nil || found.URL != acct.URL {
		t.Fatalf("FindAccount = %v, %v, want URL %s", found.URL, err, acct.URL)
	}
	if _, err := c.FindAccount(ctx, newKey(t)); !errors.Is(err, acme.ErrAccountDoesNotExist) {
		t.Errorf("FindAccount(unknown key) = %v, want ErrAccountDoesNotExist", err)
	}

	acct.Contact = []string{"mailto:b@example.com"}
	updated, err := c.UpdateAccount(ctx, acct)
	if err != nil {
		t.Fatalf("UpdateAccount: %v", err)
	}
	got, err := c.GetAccount(ctx, updated)
	if err != nil || !slices.Equal(got.Contact, acct.Contact) {
		t.Errorf("GetAccount after update = %v, %v, want contacts %v", got.Contact, err, acct.Contact)
	}

	// Roll over to an RSA key, then issue with it.
	rsaKey := rsaTestKey(t)
	rolled, err := c.ChangeAccountKey(ctx, acct, rsaKey)
	if err != nil {
		t.Fatalf("ChangeAccountKey: %v", err)
	}
	if _, err := c.FindAccount(ctx, key); !errors.Is(err, acme.ErrAccountDoesNotExist) {
		t.Errorf("FindAccount(old key) after rollover = %v, want ErrAccountDoesNotExist", err)
	}
	if f, err := c.FindAccount(ctx, rsaKey); err != nil || f.URL != acct.URL {
		t.Errorf("FindAccount(new key) = %v, %v, want %s", f.URL, err, acct.URL)
	}
	ids := []acme.Identifier{acme.DNS("rollover.example.com")}
	chain, _ := issue(t, c, pebble, rolled, acme.Order{Identifiers: ids}, dns01)
	verifyChain(t, pebble, chain, 0, ids)

	deact, err := c.DeactivateAccount(ctx, rolled)
	if err != nil || deact.Status != acme.StatusDeactivated {
		t.Fatalf("DeactivateAccount = %q, %v, want deactivated", deact.Status, err)
	}
	var p *acme.Problem
	if _, err := c.NewOrder(ctx, rolled, acme.Order{Identifiers: ids}); !errors.As(err, &p) || p.Type != acme.ProblemUnauthorized {
		t.Errorf("NewOrder with deactivated account = %v, want unauthorized", err)
	}
}

// rsaTestKey returns a fresh 2048-bit RSA key (slow to make, so used
// sparingly).
func rsaTestKey(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestAccountKeyTypes(t *testing.T) {
	c := newClient(pebble)
	for _, tt := range []struct {
		name string
		key  func() (crypto.Signer, error)
	}{
		{"RSA", func() (crypto.Signer, error) { return rsaTestKey(t), nil }},
		{"P-256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
		{"P-384", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }},
		{"P-521", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tt.key()
			if err != nil {
				t.Fatal(err)
			}
			acct, err := c.NewAccount(testCtx(t), acme.Account{Key: key, TermsOfServiceAgreed: true}, nil)
			if err != nil || acct.Status != acme.StatusValid {
				t.Fatalf("NewAccount = %+v, %v", acct, err)
			}
			if _, err := c.GetAccount(testCtx(t), acct); err != nil {
				t.Errorf("GetAccount (kid): %v", err)
			}
		})
	}
}

func TestBadSignatureAlgorithm(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, err = newClient(pebble).NewAccount(testCtx(t), acme.Account{Key: key, TermsOfServiceAgreed: true}, nil)
	var p *acme.Problem
	if !errors.As(err, &p) || p.Type != acme.ProblemBadSignatureAlgorithm {
		t.Fatalf("NewAccount(Ed25519) = %v, want badSignatureAlgorithm", err)
	}
	if !slices.Contains(p.Algorithms, "ES256") || !slices.Contains(p.Algorithms, "RS256") || slices.Contains(p.Algorithms, "EdDSA") {
		t.Errorf("Problem.Algorithms = %v, want ES256 and RS256 and not EdDSA", p.Algorithms)
	}
}

func TestAlternateChains(t *testing.T) {
	s := startPebble(t, pebbletest.Options{AlternateRoots: 2, ChainLength: 2})
	c := newClient(s)
	acct := newAccount(t, c)
	ids := []acme.Identifier{acme.DNS("alt.example.com")}
	def, _ := issue(t, c, s, acct, acme.Order{Identifiers: ids}, dns01)
	if len(def.Alternates) != 2 {
		t.Fatalf("alternates = %v, want 2", def.Alternates)
	}
	verifyChain(t, s, def, 2, ids)
	// Prefer the last alternate root by its common name.
	want := mustCert(t, s.RootPEM(t, 2)).Subject.CommonName
	if def.IssuerCommonName() == want {
		t.Fatalf("default chain already leads to %q", want)
	}
	got, err := c.FetchPreferredChain(testCtx(t), acct, def.URL, want)
	if err != nil {
		t.Fatal(err)
	}
	if got.IssuerCommonName() != want || got.URL == def.URL {
		t.Errorf("FetchPreferredChain(%q) = chain to %q from %s", want, got.IssuerCommonName(), got.URL)
	}
	if !got.Certificates[0].Equal(def.Certificates[0]) {
		t.Error("alternate chain has a different end-entity certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(mustCert(t, s.RootPEM(t, 2)))
	inter := x509.NewCertPool()
	for _, ic := range got.Certificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := got.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter}); err != nil {
		t.Errorf("preferred chain does not verify to root 2: %v", err)
	}
	if cc := acme.PreferredChain([]acme.CertificateChain{def, got}, want); cc.URL != got.URL {
		t.Errorf("PreferredChain picked %s, want %s", cc.URL, got.URL)
	}
	if cc, err := c.FetchPreferredChain(testCtx(t), acct, def.URL, "no such CA"); err != nil || cc.URL != def.URL {
		t.Errorf("FetchPreferredChain(unknown) = %s, %v, want the default chain", cc.URL, err)
	}
}

func mustCert(t testing.TB, pemData []byte) *x509.Certificate {
	t.Helper()
	certs, err := acme.ParseChainPEM(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestRevoke(t *testing.T) {
	c := newClient(pebble)
	acct := newAccount(t, c)
	for _, tt := range []struct {
		name   string
		reason int
		byKey  bool
	}{
		{"account key", acme.ReasonSuperseded, false},
		{"certificate key", acme.ReasonKeyCompromise, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ids := []acme.Identifier{acme.DNS("revoke" + strconv.FormatBool(tt.byKey) + ".example.com")}
			chain, certKey := issue(t, c, pebble, acct, acme.Order{Identifiers: ids}, dns01)
			der := chain.Certificates[0].Raw
			var err error
			if tt.byKey {
				err = c.RevokeCertificateWithKey(testCtx(t), certKey, der, tt.reason)
			} else {
				err = c.RevokeCertificate(testCtx(t), acct, der, tt.reason)
			}
			if err != nil {
				t.Fatalf("revoking: %v", err)
			}
			st := pebble.CertStatus(t, fmt.Sprintf("%x", chain.Certificates[0].SerialNumber))
			if st["Status"] != "Revoked" || st["Reason"] != float64(tt.reason) {
				t.Errorf("cert status = %v, want Revoked with reason %d", st, tt.reason)
			}
			var p *acme.Problem
			if err := c.RevokeCertificate(testCtx(t), acct, der, tt.reason); !errors.As(err, &p) || p.Type != acme.ProblemAlreadyRevoked {
				t.Errorf("second revocation = %v, want alreadyRevoked", err)
			}
		})
	}
}

func TestRenewalInfo(t *testing.T) {
	c := newClient(pebble)
	acct := newAccount(t, c)
	issued, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: []acme.Identifier{acme.DNS("ari.example.com")}}, dns01)
	revoked, _ := issue(t, c, pebble, acct, acme.Order{Identifiers: []acme.Identifier{acme.DNS("ari-revoked.example.com")}}, dns01)
	if err := c.RevokeCertificate(testCtx(t), acct, revoked.Certificates[0].Raw, acme.ReasonUnspecified); err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	leaf := issued.Certificates[0]
	ri, err := c.GetRenewalInfo(testCtx(t), leaf)
	if err != nil {
		t.Fatalf("GetRenewalInfo(issued): %v", err)
	}
	w := ri.SuggestedWindow
	if !w.Start.After(now) || w.End.After(leaf.NotAfter) || ri.RetryAfter <= 0 {
		t.Errorf("renewal info of a fresh certificate = %+v, want a future window before expiry and a Retry-After", ri)
	}
	if at := ri.RenewalTime(now); at.Before(w.Start) || at.After(w.End) {
		t.Errorf("RenewalTime = %s, want within %s..%s", at, w.Start, w.End)
	}

	ri, err = c.GetRenewalInfo(testCtx(t), revoked.Certificates[0])
	if err != nil {
		t.Fatalf("GetRenewalInfo(revoked): %v", err)
	}
	if ri.SuggestedWindow.End.After(time.Now()) {
		t.Errorf("renewal window of a revoked certificate = %+v, want in the past", ri.SuggestedWindow)
	}
	if at := ri.RenewalTime(now); !at.Equal(now) {
		t.Errorf("RenewalTime for a past window = %s, want now", at)
	}

	// Replace the issued certificate (RFC 9773 §5).
	id, err := acme.ARICertID(leaf)
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.NewOrder(testCtx(t), acct, acme.Order{Identifiers: []acme.Identifier{acme.DNS("ari.example.com")}, Replaces: id})
	if err != nil || o.Replaces != id {
		t.Errorf("NewOrder(replaces) = %+v, %v, want replaces %s", o, err, id)
	}
}

func TestIssueWithRejectedNonces(t *testing.T) {
	s := startPebble(t, pebbletest.Options{NonceRejectPercent: 50})
	c := newClient(s)
	acct := newAccount(t, c)
	s.Counter().Reset()
	ids := []acme.Identifier{acme.DNS("nonces.example.com")}
	for range 2 {
		chain, _ := issue(t, c, s, acct, acme.Order{Identifiers: ids}, dns01)
		verifyChain(t, s, chain, 0, ids)
	}
	// Two issuances take 14 requests when no nonce is rejected; the
	// chance that none of them was is 2^-14.
	if _, total := s.Counter().Snapshot(); total <= 14 {
		t.Errorf("requests = %d, want more than 14 (retries after badNonce)", total)
	}
}

// TestRequestCount pins the requests of one issuance with an existing
// account to the protocol minimum. PollInterval is long enough that each
// poll finds the authorization validated and the certificate issued.
func TestRequestCount(t *testing.T) {
	s := startPebble(t, pebbletest.Options{Strict: true})
	setup := newClient(s)
	acct := newAccount(t, setup)

	c := newClient(s)
	c.PollInterval = 300 * time.Millisecond
	s.Counter().Reset()
	ids := []acme.Identifier{acme.DNS("count.example.com")}
	chain, _ := issue(t, c, s, acct, acme.Order{Identifiers: ids}, dns01)
	verifyChain(t, s, chain, 0, ids)
	got, total := s.Counter().Snapshot()
	want := map[string]int{
		"GET /dir":              1, // directory, once
		"HEAD /nonce-plz":       1, // one nonce; every later one comes with a response
		"POST /order-plz":       1, // newOrder
		"POST /authZ/":          2, // fetch the authorization, one poll
		"POST /chalZ/":          1, // accept the challenge
		"POST /finalize-order/": 1, // finalize
		"POST /my-order/":       1, // one poll until valid
		"POST /certZ/":          1, // download
	}
	if !maps.Equal(got, want) || total != 9 {
		t.Errorf("requests = %v (%d), want %v (9)", got, total, want)
	}
}

func TestDeactivateAuthorizationPebble(t *testing.T) {
	c := newClient(pebble)
	acct := newAccount(t, c)
	o, err := c.NewOrder(testCtx(t), acct, acme.Order{Identifiers: []acme.Identifier{acme.DNS("deactivate.example.com")}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.DeactivateAuthorization(testCtx(t), acct, o.Authorizations[0])
	if err != nil || a.Status != acme.StatusDeactivated {
		t.Fatalf("DeactivateAuthorization = %q, %v, want deactivated", a.Status, err)
	}
	if a, err = c.GetAuthorization(testCtx(t), acct, o.Authorizations[0]); err != nil || a.Status != acme.StatusDeactivated {
		t.Errorf("GetAuthorization after deactivation = %q, %v", a.Status, err)
	}
	if _, err := c.NewAuthorization(testCtx(t), acct, acme.DNS("pre.example.com")); !errors.Is(err, acme.ErrNotSupported) {
		t.Errorf("NewAuthorization against Pebble = %v, want ErrNotSupported", err)
	}
}

// TestAccountErrors: a request signed for an account URL the CA does not
// know, and a lookup of a key without an account, say the account does
// not exist (Pebble). The key change conflict is tested against the fake
// CA (TestKeyChangeConflict): Pebble v2.10.3 answers it with an empty
// 200 and changes nothing.
func TestAccountErrors(t *testing.T) {
	c := newClient(pebble)
	ctx := testCtx(t)
	a := newAccount(t, c)
	var ae *acme.AccountError
	ghost := acme.Account{Key: a.Key, URL: a.URL + "-gone"}
	_, err := c.NewOrder(ctx, ghost, acme.Order{Identifiers: dnsIDs("ghost.example.com")})
	if !errors.As(err, &ae) || !errors.Is(err, acme.ErrAccountDoesNotExist) || errors.Is(err, acme.ErrAccountKeyConflict) || ae.URL != ghost.URL {
		t.Fatalf("NewOrder for an unknown account = %v, want an *AccountError for %s matching ErrAccountDoesNotExist", err, ghost.URL)
	}
	if want := "creating order: acme: account " + ghost.URL + " does not exist: POST "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start %q", err, want)
	}
	_, err = c.FindAccount(ctx, newKey(t))
	if !errors.Is(err, acme.ErrAccountDoesNotExist) || !strings.HasPrefix(err.Error(), "finding account: acme: no account for the key: POST ") {
		t.Errorf("FindAccount(unknown key) = %v", err)
	}
}
