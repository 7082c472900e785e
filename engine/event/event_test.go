package event

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/acmehook/acmehook/acme"
)

var testCert = Certificate{
	Serial: "0a", Issuer: "CN=Test CA", NotBefore: time.Unix(1, 0), NotAfter: time.Unix(2, 0), Profile: "shortlived",
	CertPEM: "C", ChainPEM: "I", CertPath: "/s/cert.pem", KeyPath: "/s/key.pem", ChainPath: "/s/chain.pem", FullchainPath: "/s/fullchain.pem",
}

func TestConstructors(t *testing.T) {
	withCert := func(ev Event) Event {
		ev.Serial, ev.Issuer, ev.NotBefore, ev.NotAfter, ev.Profile = "0a", "CN=Test CA", time.Unix(1, 0), time.Unix(2, 0), "shortlived"
		ev.CertPEM, ev.ChainPEM, ev.FullchainPEM = "C", "I", "CI"
		ev.CertPath, ev.KeyPath, ev.ChainPath, ev.FullchainPath = "/s/cert.pem", "/s/key.pem", "/s/chain.pem", "/s/fullchain.pem"
		return ev
	}
	domains := []string{"www.example", "192.0.2.1"}
	problem := &acme.Problem{Type: acme.ProblemRateLimited, Detail: "slow down", Instance: "https://ca.example/p/1"}
	uar := &acme.Problem{Type: acme.ProblemUserActionRequired, Detail: "agree", Instance: "https://ca.example/tos"}
	ch := Challenge{Type: "http-01", Identifier: "www.example", Token: "tok", KeyAuthorization: "tok.thumb"}
	tests := []struct {
		name string
		got  Event
		want Event
	}{
		{"issued", NewIssued("www", domains, testCert), withCert(Event{Type: Issued, Cert: "www", Domains: domains})},
		{"renew", NewRenew("www", domains, testCert, "09"), withCert(Event{Type: Renew, Cert: "www", Domains: domains, PreviousSerial: "09"})},
		{"revoke", NewRevoke("www", domains, testCert, acme.ReasonKeyCompromise), withCert(Event{Type: Revoke, Cert: "www", Domains: domains, RevocationReason: 1})},
		{"failed, first issuance", NewFailed("www", domains, nil, errors.New("no")),
			Event{Type: Failed, Cert: "www", Domains: domains, Error: &Error{Message: "no"}}},
		{"failed with a problem, certificate in service", NewFailed("www", domains, &testCert, fmt.Errorf("creating order: %w", problem)),
			withCert(Event{Type: Failed, Cert: "www", Domains: domains, Error: &Error{
				Message: "creating order: " + problem.Error(), ProblemType: acme.ProblemRateLimited, ProblemDetail: "slow down", ProblemInstance: "https://ca.example/p/1"}})},
		{"challenge", NewChallenge(ChallengeProvision, "www", domains, ch), Event{Type: ChallengeProvision, Cert: "www", Domains: domains, Challenge: &ch}},
		{"user-action-required", NewUserActionRequired("www", domains, &testCert, fmt.Errorf("creating order: %w", uar)),
			withCert(Event{Type: UserActionRequired, Cert: "www", Domains: domains, Error: &Error{
				Message: "creating order: " + uar.Error(), ProblemType: acme.ProblemUserActionRequired, ProblemDetail: "agree", ProblemInstance: "https://ca.example/tos"}})},
		{"renewal-held, expires first", NewRenewalHeld("www", domains, &testCert, "guard", time.Unix(2, 0)),
			withCert(Event{Type: RenewalHeld, Cert: "www", Domains: domains, HoldReason: "guard", HeldUntil: time.Unix(2, 0), ExpiresBeforeHoldEnds: true})},
		{"renewal-held, ends in time", NewRenewalHeld("www", domains, &testCert, "backoff", time.Unix(1, 0)),
			withCert(Event{Type: RenewalHeld, Cert: "www", Domains: domains, HoldReason: "backoff", HeldUntil: time.Unix(1, 0)})},
		{"renewal-held, none in service", NewRenewalHeld("www", domains, nil, "backoff", time.Unix(1, 0)),
			Event{Type: RenewalHeld, Cert: "www", Domains: domains, HoldReason: "backoff", HeldUntil: time.Unix(1, 0)}},
		{"tos-changed", NewTOSChanged("https://ca.example/dir", "https://ca.example/acct/1", "https://ca.example/tos/2", "https://ca.example/tos/1", true),
			Event{Type: TOSChanged, Directory: "https://ca.example/dir", AccountURL: "https://ca.example/acct/1", TermsOfService: "https://ca.example/tos/2",
				PreviousTermsOfService: "https://ca.example/tos/1", Agreed: true}},
		{"run-begin", NewRunBegin(time.Unix(5, 0), runCerts[:1]), Event{Type: RunBegin, Run: &Run{Started: time.Unix(5, 0), Certificates: runCerts[:1]}}},
		{"run-end", NewRunEnd(time.Unix(5, 0), runCerts), Event{Type: RunEnd, Run: &Run{Started: time.Unix(5, 0), Certificates: runCerts,
			Issued: []string{"a"}, Renewed: []string{"b", "c"}, Deployed: []string{"a", "b", "d"}, Failed: []string{"c", "e"}, Held: []string{"f"}}}},
		{"run-end of nothing", NewRunEnd(time.Unix(5, 0), nil), Event{Type: RunEnd, Run: &Run{Started: time.Unix(5, 0),
			Issued: []string{}, Renewed: []string{}, Deployed: []string{}, Failed: []string{}, Held: []string{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

// runCerts is a run of each outcome: a issued, b renewed, c renewed but
// its deploy failed, d's pending deploy retried, e failed, f held.
var runCerts = []RunCertificate{
	{Cert: "a", Action: "issued", Deployed: true},
	{Cert: "b", Action: "renewed", Deployed: true},
	{Cert: "c", Action: "renewed", Error: "engine: deploy failed: nginx -t"},
	{Cert: "d", Action: "deployed", Deployed: true},
	{Cert: "e", Action: "failed", Error: "creating order: rateLimited"},
	{Cert: "f", Action: "held"},
}

func TestTypes(t *testing.T) {
	for _, ty := range Types {
		if !ty.Valid() {
			t.Errorf("%s.Valid() = false", ty)
		}
		if ty.Pre() != (ty == ChallengeProvision) {
			t.Errorf("%s.Pre() = %t", ty, ty.Pre())
		}
		if ty.RunLevel() != (ty == RunBegin || ty == RunEnd) {
			t.Errorf("%s.RunLevel() = %t", ty, ty.RunLevel())
		}
	}
	if Type("deployed").Valid() {
		t.Error(`Type("deployed").Valid() = true`)
	}
}

type recorder struct {
	name string
	err  error
	seen *[]string
}

func (r recorder) Handle(_ context.Context, ev Event) error {
	*r.seen = append(*r.seen, r.name)
	return r.err
}

func TestHooks(t *testing.T) {
	var seen []string
	a, b := errors.New("a vetoes"), errors.New("b fails")
	hs := Hooks{recorder{"a", a, &seen}, recorder{"b", b, &seen}, recorder{"c", nil, &seen}}
	if err := hs.Handle(context.Background(), Event{Type: ChallengeProvision}); err != a || strings.Join(seen, "") != "a" {
		t.Errorf("pre-event: err %v, handlers %v; want %v from a alone", err, seen, a)
	}
	seen = nil
	err := hs.Handle(context.Background(), Event{Type: Issued})
	if !errors.Is(err, a) || !errors.Is(err, b) || strings.Join(seen, "") != "abc" {
		t.Errorf("post-event: err %v, handlers %v; want a's and b's errors from a, b, c", err, seen)
	}
}

func TestSynthetic(t *testing.T) {
	for _, ty := range Types {
		t.Run(string(ty), func(t *testing.T) {
			dir := t.TempDir()
			ev, err := Synthetic(ty, "www", []string{"www.example", "192.0.2.1"}, dir)
			if err != nil {
				t.Fatal(err)
			}
			if ty.RunLevel() {
				if ev.Type != ty || !ev.Test || ev.Cert != "" || ev.Run == nil || len(ev.Run.Certificates) != 1 ||
					ev.Run.Certificates[0].Cert != "www" || len(ev.Run.Certificates[0].Domains) != 2 {
					t.Errorf("Synthetic(%s) = %+v, want a run of www", ty, ev)
				}
				if ty == RunEnd && (len(ev.Run.Deployed) != 1 || len(ev.Run.Renewed) != 1 || ev.Run.Certificates[0].Serial == "") {
					t.Errorf("Synthetic(run-end) = %+v, want www renewed and deployed", ev.Run)
				}
				return
			}
			if ty == TOSChanged {
				if !ev.Test || ev.Cert != "" || ev.TermsOfService == "" || ev.PreviousTermsOfService == "" || ev.TermsOfService == ev.PreviousTermsOfService || ev.Agreed {
					t.Errorf("Synthetic(tos-changed) = %+v, want changed terms not agreed to", ev)
				}
				return
			}
			if ev.Type != ty || !ev.Test || ev.Cert != "www" || len(ev.Domains) != 2 {
				t.Errorf("Synthetic(%s) = %+v", ty, ev)
			}
			hasCert := ty != ChallengeProvision && ty != ChallengeCleanup
			if (ev.Serial != "") != hasCert || (ev.Challenge != nil) == hasCert {
				t.Errorf("Synthetic(%s): serial %q, challenge %v", ty, ev.Serial, ev.Challenge)
			}
			if hasCert {
				b, err := os.ReadFile(filepath.Join(dir, "fullchain.pem"))
				if err != nil || string(b) != ev.FullchainPEM {
					t.Errorf("fullchain.pem = %q (%v), want the event's fullchain_pem", b, err)
				}
			}
		})
	}
	if _, err := Synthetic("deployed", "www", []string{"www.example"}, t.TempDir()); err == nil {
		t.Error("Synthetic(deployed) succeeded")
	}
}
