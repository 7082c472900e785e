package acme_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// dnsSolver answers dns-01 through the test DNS server and records what
// the flow asked of it.
type dnsSolver struct {
	s *pebbletest.Server
	// types overrides the challenge types offered (nil: dns-01 only).
	types []string
	// wrong publishes a TXT value the CA will not accept.
	wrong bool
	// presentErr fails Present.
	presentErr error

	mu       sync.Mutex
	presents []string // identifiers as ordered
	cleanups []string
	waits    int
	tasks    []acme.Task
}

func (d *dnsSolver) ChallengeTypes(ctx context.Context, id acme.Identifier) ([]string, error) {
	if d.types != nil {
		return d.types, nil
	}
	return []string{acme.ChallengeDNS01}, nil
}

func (d *dnsSolver) Present(ctx context.Context, t acme.Task) error {
	d.mu.Lock()
	d.presents = append(d.presents, t.Identifier().Value)
	d.tasks = append(d.tasks, t)
	d.mu.Unlock()
	if d.presentErr != nil {
		return d.presentErr
	}
	value := acme.DNS01TXTRecord(t.KeyAuthorization)
	if d.wrong {
		value = acme.DNS01TXTRecord("not the key authorization")
	}
	publishTXT(acme.DNS01TXTRecordName(t.Authorization.Identifier.Value), value)
	return nil
}

func (d *dnsSolver) CleanUp(ctx context.Context, t acme.Task) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("CleanUp without a deadline")
	}
	d.mu.Lock()
	d.cleanups = append(d.cleanups, t.Identifier().Value)
	d.mu.Unlock()
	d.s.DNS.DeleteDNSTXTRecord(acme.DNS01TXTRecordName(t.Authorization.Identifier.Value) + ".")
	return nil
}

func (d *dnsSolver) Waiting(t acme.Task) func() {
	d.mu.Lock()
	d.waits++
	d.mu.Unlock()
	return func() {}
}

// calls returns the identifiers presented and cleaned up, sorted.
func (d *dnsSolver) calls() (presents, cleanups []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sorted(d.presents), sorted(d.cleanups)
}

func dnsIDs(names ...string) []acme.Identifier {
	ids := make([]acme.Identifier, len(names))
	for i, n := range names {
		ids[i] = acme.DNS(n)
	}
	return ids
}

func TestObtainCertificate(t *testing.T) {
	tests := []struct {
		name string
		ids  []acme.Identifier
	}{
		{"one name", dnsIDs("obtain.example.com")},
		{"wildcard and apex", dnsIDs("*.obtain-wild.example.com", "obtain-wild.example.com")},
		{"three names, mixed case", dnsIDs("a.obtain3.example.com", "B.obtain3.example.com", "c.obtain3.example.com")},
	}
	c := newClient(pebble)
	acct := newAccount(t, c)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sol := &dnsSolver{s: pebble}
			key := newKey(t)
			got, err := c.ObtainCertificate(testCtx(t), acct, acme.CertificateRequest{
				Identifiers: tt.ids, Key: key, Solver: sol, Roots: pebble.Roots(t, 0),
			})
			if err != nil {
				t.Fatalf("ObtainCertificate: %v", err)
			}
			if got.Order.Status != acme.StatusValid || got.Chain.URL != got.Order.Certificate {
				t.Errorf("order = %q, chain from %s, want valid with the chain from %s", got.Order.Status, got.Chain.URL, got.Order.Certificate)
			}
			verifyChain(t, pebble, got.Chain, 0, tt.ids)
			presents, cleanups := sol.calls()
			// Pebble lowercases the names of the order.
			if want := sorted(strings.Split(strings.ToLower(strings.Join(values(tt.ids), " ")), " ")); !slices.Equal(presents, want) || !slices.Equal(cleanups, want) {
				t.Errorf("presented %v, cleaned up %v, want %v both", presents, cleanups, want)
			}
			if sol.waits != len(tt.ids) {
				t.Errorf("Waiting called %d times, want %d", sol.waits, len(tt.ids))
			}
			for _, task := range sol.tasks {
				if task.Challenge.Type != acme.ChallengeDNS01 || task.Authorization.URL == "" || !strings.HasPrefix(task.KeyAuthorization, task.Challenge.Token+".") {
					t.Errorf("task = %+v, want a dns-01 challenge with its authorization URL and key authorization", task)
				}
				if task.Authorization.Wildcard != task.Identifier().Wildcard() {
					t.Errorf("task for %s: Wildcard %v, Identifier().Wildcard() %v", task.Identifier(), task.Authorization.Wildcard, task.Identifier().Wildcard())
				}
			}
		})
	}
}

// TestSolveAuthorizationsFailures runs the flow's refusals and failures
// against Pebble: each ends with the exact error, and every Present is
// followed by a CleanUp.
func TestSolveAuthorizationsFailures(t *testing.T) {
	errPresent := errors.New("no DNS API today")
	tests := []struct {
		name      string
		sol       *dnsSolver
		presented bool
		check     func(t *testing.T, err error)
	}{
		{
			name: "no challenge type in common",
			sol:  &dnsSolver{types: []string{"email-reply-00", acme.ChallengeTLSALPN01 + "-nope"}},
			check: func(t *testing.T, err error) {
				var ne *acme.NoChallengeError
				if !errors.As(err, &ne) || !errors.Is(err, acme.ErrNoChallenge) {
					t.Fatalf("err = %v, want a *NoChallengeError", err)
				}
				if ne.Identifier.Value != "nochal.example.com" || !slices.Contains(ne.Offered, acme.ChallengeDNS01) || !slices.Equal(ne.Supported, []string{"email-reply-00", "tls-alpn-01-nope"}) {
					t.Errorf("NoChallengeError = %+v", ne)
				}
				want := "acme: no challenge the solver can answer for nochal.example.com: the CA offers "
				if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "the solver answers [email-reply-00 tls-alpn-01-nope]") {
					t.Errorf("err = %q, want it to start %q and name the solver's types", err, want)
				}
			},
		},
		{
			name:      "present fails",
			sol:       &dnsSolver{presentErr: errPresent},
			presented: true,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, errPresent) || err.Error() != "presenting dns-01 for present.example.com: no DNS API today" {
					t.Errorf("err = %q, want %q", err, "presenting dns-01 for present.example.com: no DNS API today")
				}
			},
		},
		{
			name:      "validation fails",
			sol:       &dnsSolver{wrong: true},
			presented: true,
			check: func(t *testing.T, err error) {
				var ve *acme.ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("err = %v, want a *ValidationError", err)
				}
				if got := ve.Identifiers(); !slices.Equal(got, dnsIDs("invalid.example.com")) {
					t.Errorf("ValidationError.Identifiers() = %v", got)
				}
				var p *acme.Problem
				if !errors.As(err, &p) || p.Type != acme.ProblemUnauthorized {
					t.Errorf("problem = %v, want unauthorized (wrong TXT value)", p)
				}
				if want := "acme: validation failed: invalid.example.com is invalid: dns-01: unauthorized (403): "; !strings.HasPrefix(err.Error(), want) {
					t.Errorf("err = %q, want it to start %q", err, want)
				}
			},
		},
	}
	names := map[string]string{"no challenge type in common": "nochal.example.com", "present fails": "present.example.com", "validation fails": "invalid.example.com"}
	c := newClient(pebble)
	acct := newAccount(t, c)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.sol.s = pebble
			ids := dnsIDs(names[tt.name])
			o, err := c.NewOrder(testCtx(t), acct, acme.Order{Identifiers: ids})
			if err != nil {
				t.Fatal(err)
			}
			err = c.SolveAuthorizations(testCtx(t), acct, o, tt.sol)
			tt.check(t, err)
			presents, cleanups := tt.sol.calls()
			if !slices.Equal(presents, cleanups) || (len(presents) > 0) != tt.presented {
				t.Errorf("presented %v, cleaned up %v; want presented=%v, each cleaned up", presents, cleanups, tt.presented)
			}
		})
	}
}

// TestSolveAuthorizationsSkipsValid: with authorization reuse, the second
// order's authorization is already valid and no solver is called.
func TestSolveAuthorizationsSkipsValid(t *testing.T) {
	s := startPebble(t, pebbletest.Options{AuthzReusePercent: 100})
	c := newClient(s)
	acct := newAccount(t, c)
	ids := dnsIDs("reuse.example.com")
	for i, wantPresents := range []int{1, 0} {
		sol := &dnsSolver{s: s}
		if _, err := c.ObtainCertificate(testCtx(t), acct, acme.CertificateRequest{Identifiers: ids, Key: newKey(t), Solver: sol}); err != nil {
			t.Fatalf("ObtainCertificate %d: %v", i, err)
		}
		if p, _ := sol.calls(); len(p) != wantPresents {
			t.Errorf("order %d: presented %v, want %d", i, p, wantPresents)
		}
	}
}

// TestObtainCertificateRequestCount pins a whole issuance with a new
// account to the protocol minimum, counted at strict Pebble (no rejected
// nonces, no authorization reuse): directory, one newNonce (single-flight:
// every later nonce comes with an answer, even while 20 authorizations
// are solved at once), newAccount, newOrder, per name the authorization,
// the challenge and one authorization poll, then finalize, one order poll
// and the certificate. The poll interval is long enough for each poll to
// find the work done.
func TestObtainCertificateRequestCount(t *testing.T) {
	s := startPebble(t, pebbletest.Options{Strict: true})
	tests := []struct {
		names int
		want  int
	}{
		{1, 10},
		{20, 67},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d names", tt.names), func(t *testing.T) {
			s.Counter().Reset()
			c := newClient(s)
			c.PollInterval = 300 * time.Millisecond
			acct, err := c.NewAccount(testCtx(t), acme.Account{Key: newKey(t), TermsOfServiceAgreed: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ids []acme.Identifier
			for i := range tt.names {
				ids = append(ids, acme.DNS(fmt.Sprintf("n%d.count%d.example.com", i, tt.names)))
			}
			if _, err := c.ObtainCertificate(testCtx(t), acct, acme.CertificateRequest{Identifiers: ids, Key: newKey(t), Solver: &dnsSolver{s: s}}); err != nil {
				t.Fatal(err)
			}
			got, total := s.Counter().Snapshot()
			want := map[string]int{
				"GET /dir":              1,
				"HEAD /nonce-plz":       1,
				"POST /sign-me-up":      1,
				"POST /order-plz":       1,
				"POST /authZ/":          2 * tt.names,
				"POST /chalZ/":          tt.names,
				"POST /finalize-order/": 1,
				"POST /my-order/":       1,
				"POST /certZ/":          1,
			}
			if !maps.Equal(got, want) || total != tt.want {
				t.Errorf("requests = %v (%d), want %v (%d)", got, total, want, tt.want)
			}
		})
	}
}

// TestObtainCertificateRefusesEarly: a request that cannot succeed is
// refused before an order is placed.
func TestObtainCertificateRefusesEarly(t *testing.T) {
	s := startPebble(t, pebbletest.Options{})
	c := newClient(s)
	acct := newAccount(t, c)
	ids := dnsIDs("early.example.com")
	tests := []struct {
		name string
		req  acme.CertificateRequest
		want string
	}{
		{"no key", acme.CertificateRequest{Identifiers: ids, Solver: &dnsSolver{s: s}}, "acme: obtaining certificate: no certificate key"},
		{"no solver", acme.CertificateRequest{Identifiers: ids, Key: newKey(t)}, "acme: obtaining certificate: no solver"},
		{"account key", acme.CertificateRequest{Identifiers: ids, Key: acct.Key, Solver: &dnsSolver{s: s}}, "obtaining certificate: acme: certificate key must differ from the account key"},
	}
	s.Counter().Reset()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.ObtainCertificate(testCtx(t), acct, tt.req)
			if err == nil || err.Error() != tt.want {
				t.Errorf("ObtainCertificate = %v, want %s", err, tt.want)
			}
		})
	}
	if got, _ := s.Counter().Snapshot(); got["POST /order-plz"] != 0 {
		t.Errorf("orders placed = %d, want 0", got["POST /order-plz"])
	}
}
