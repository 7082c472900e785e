package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestJSONRoundTrip decodes a server message, encodes it and decodes it
// again: nothing may be lost or changed.
func TestJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		new  func() any
		json string
	}{
		{"directory", func() any { return new(Directory) }, `{"newNonce":"https://ca.example/nonce","newAccount":"https://ca.example/acct","newOrder":"https://ca.example/order","newAuthz":"https://ca.example/authz","revokeCert":"https://ca.example/revoke","keyChange":"https://ca.example/kc","renewalInfo":"https://ca.example/ari","meta":{"termsOfService":"https://ca.example/tos","website":"https://ca.example","caaIdentities":["ca.example"],"externalAccountRequired":true,"profiles":{"classic":"90 days","shortlived":"6 days"}}}`},
		{"account", func() any { return new(Account) }, `{"status":"valid","contact":["mailto:a@example.com"],"termsOfServiceAgreed":true,"orders":"https://ca.example/orders/1","externalAccountBinding":{"protected":"e30","payload":"e30","signature":"AA"}}`},
		{"order", func() any { return new(Order) }, `{"status":"invalid","expires":"2026-01-02T03:04:05Z","identifiers":[{"type":"dns","value":"*.example.com"},{"type":"ip","value":"192.0.2.1"}],"notBefore":"2026-01-01T00:00:00Z","notAfter":"2026-01-08T00:00:00Z","error":{"type":"urn:ietf:params:acme:error:compound","detail":"two failures","status":403,"subproblems":[{"type":"urn:ietf:params:acme:error:caa","detail":"forbidden","identifier":{"type":"dns","value":"example.com"}}]},"authorizations":["https://ca.example/authz/1"],"finalize":"https://ca.example/order/1/finalize","certificate":"https://ca.example/cert/1","profile":"shortlived","replaces":"aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}`},
		{"authorization", func() any { return new(Authorization) }, `{"identifier":{"type":"dns","value":"example.com"},"status":"valid","expires":"2026-01-02T03:04:05Z","challenges":[{"type":"http-01","url":"https://ca.example/chall/1","status":"valid","validated":"2026-01-01T00:00:00Z","token":"DGyRejmCefe7v4NfDGDKfA"},{"type":"dns-01","url":"https://ca.example/chall/2","status":"invalid","error":{"type":"urn:ietf:params:acme:error:dns","detail":"NXDOMAIN"},"token":"DGyRejmCefe7v4NfDGDKfA"},{"type":"future-01","url":"https://ca.example/chall/3","status":"pending","nonce":"xyz"}],"wildcard":true}`},
		{"problem", func() any { return new(Problem) }, `{"type":"urn:ietf:params:acme:error:badSignatureAlgorithm","title":"Bad alg","status":400,"detail":"use another","instance":"https://ca.example/p/1","algorithms":["ES256","RS256"]}`},
		{"renewalInfo", func() any { return new(RenewalInfo) }, `{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"},"explanationURL":"https://ca.example/why"}`},
	}
	ignoreRaw := cmpopts.IgnoreFields(Challenge{}, "Raw")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := tt.new()
			if err := json.Unmarshal([]byte(tt.json), first); err != nil {
				t.Fatal(err)
			}
			enc, err := json.Marshal(first)
			if err != nil {
				t.Fatal(err)
			}
			second := tt.new()
			if err := json.Unmarshal(enc, second); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(first, second, ignoreRaw); diff != "" {
				t.Errorf("round trip changed the message (-first +second):\n%s", diff)
			}
			// Every field of the input survives: compare as generic JSON,
			// except the unknown challenge's extra member, kept in Raw.
			var in, out any
			json.Unmarshal([]byte(strings.Replace(tt.json, `,"nonce":"xyz"`, "", 1)), &in)
			json.Unmarshal(enc, &out)
			if diff := cmp.Diff(in, out); diff != "" {
				t.Errorf("encoding differs from the server's JSON (-server +ours):\n%s", diff)
			}
		})
	}
}

func TestUnknownChallengeKept(t *testing.T) {
	var a Authorization
	raw := `{"identifier":{"type":"dns","value":"example.com"},"status":"pending","challenges":[{"type":"future-01","url":"https://ca.example/c/3","status":"pending","nonce":"xyz"},{"type":"dns-01","url":"https://ca.example/c/2","status":"pending","token":"DGyRejmCefe7v4NfDGDKfA"}]}`
	if err := decode([]byte(raw), &a); err != nil {
		t.Fatalf("decoding an authorization with an unknown challenge: %v", err)
	}
	if len(a.Challenges) != 2 {
		t.Fatalf("challenges = %d, want 2", len(a.Challenges))
	}
	u := a.Challenges[0]
	if u.Recognized() || u.Type != "future-01" || !strings.Contains(string(u.Raw), `"nonce":"xyz"`) {
		t.Errorf("unknown challenge = %+v, want kept with its raw JSON", u)
	}
	if ch, ok := a.Challenge(ChallengeDNS01); !ok || !ch.Recognized() {
		t.Errorf("Challenge(dns-01) = %+v, %v", ch, ok)
	}
}

func TestProblem(t *testing.T) {
	var p Problem
	raw := `{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"policy","status":400,"subproblems":[{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"blocked","identifier":{"type":"dns","value":"bad.example"}}]}`
	if err := decode([]byte(raw), &p); err != nil {
		t.Fatal(err)
	}
	p.Method, p.URL, p.RetryAfter = "POST", "https://ca.example/order", time.Minute
	want := "acme: POST https://ca.example/order: rejectedIdentifier (400): policy; dns bad.example: rejectedIdentifier: blocked (retry after 1m0s)"
	if got := p.Error(); got != want {
		t.Errorf("Error() = %q\nwant %q", got, want)
	}
	var err error = &p
	if !errors.Is(err, &Problem{Type: ProblemRejectedIdentifier}) || errors.Is(err, &Problem{Type: ProblemMalformed}) {
		t.Error("errors.Is does not match problems by type")
	}

	bad := &Problem{Type: ProblemBadSignatureAlgorithm, Detail: "JWS header contained unsupported algorithm, supported algorithms are: [RS256 ES256 ES384 ES512]"}
	bad.fillAlgorithms()
	if !reflect.DeepEqual(bad.Algorithms, []string{"RS256", "ES256", "ES384", "ES512"}) {
		t.Errorf("algorithms from detail = %v", bad.Algorithms)
	}
}

// The vector is RFC 9773 §4.1's example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:
// 7B:84:7B:A0:AE:2C:DE:01:C8:D4 and serial 00:87:65:43:21.
func TestARICertID(t *testing.T) {
	aki := []byte{0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4}
	cert := &x509.Certificate{AuthorityKeyId: aki, SerialNumber: big.NewInt(0x87654321)}
	got, err := ARICertID(cert)
	if want := "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"; got != want || err != nil {
		t.Errorf("ARICertID = %q, %v, want %q", got, err, want)
	}
	if _, err := ARICertID(&x509.Certificate{SerialNumber: big.NewInt(1)}); !errors.Is(err, ErrNoAKI) {
		t.Errorf("ARICertID without AKI = %v, want ErrNoAKI", err)
	}
}

func TestRenewalTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ri RenewalInfo
	ri.SuggestedWindow.Start = now.Add(24 * time.Hour)
	ri.SuggestedWindow.End = now.Add(48 * time.Hour)
	seen := map[time.Time]bool{}
	for range 100 {
		at := ri.RenewalTime(now)
		if at.Before(ri.SuggestedWindow.Start) || at.After(ri.SuggestedWindow.End) {
			t.Fatalf("RenewalTime = %s, outside the window", at)
		}
		seen[at] = true
	}
	if len(seen) < 90 {
		t.Errorf("RenewalTime gave %d distinct times in 100 calls, want spread", len(seen))
	}
	ri.SuggestedWindow.Start = now.Add(-2 * time.Hour)
	ri.SuggestedWindow.End = now.Add(-time.Hour)
	if at := ri.RenewalTime(now); !at.Equal(now) {
		t.Errorf("RenewalTime for a past window = %s, want now", at)
	}
	if _, err := decodeRenewalInfo([]byte(`{"suggestedWindow":{"start":"2026-01-02T00:00:00Z","end":"2026-01-01T00:00:00Z"}}`)); !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("decoding an inverted window = %v, want ErrMalformedResponse", err)
	}
}

func TestNewCSR(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := NewCSR(key, []Identifier{DNS("example.com"), DNS("*.example.com"), ParseIdentifier("192.0.2.1"), ParseIdentifier("2001:db8::1")})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Error(err)
	}
	if !reflect.DeepEqual(csr.DNSNames, []string{"example.com", "*.example.com"}) || csr.Subject.CommonName != "example.com" ||
		len(csr.IPAddresses) != 2 || !csr.IPAddresses[0].Equal(net.ParseIP("192.0.2.1")) || !csr.IPAddresses[1].Equal(net.ParseIP("2001:db8::1")) {
		t.Errorf("CSR names = %v %v CN %q", csr.DNSNames, csr.IPAddresses, csr.Subject.CommonName)
	}
	if _, err := NewCSR(key, []Identifier{{Type: "email", Value: "a@example.com"}}); err == nil {
		t.Error("NewCSR(email identifier) succeeded")
	}
	if _, err := NewCSR(key, nil); err == nil {
		t.Error("NewCSR(no identifiers) succeeded")
	}

	// The account key is refused as certificate key before any request.
	c := &Client{DirectoryURL: "https://127.0.0.1:1/dir"}
	_, err = c.FinalizeOrder(ctxT(t), Account{Key: key, URL: "https://127.0.0.1:1/acct/1"}, Order{Finalize: "https://127.0.0.1:1/fin"}, der)
	if !errors.Is(err, ErrCertKeyIsAccountKey) {
		t.Errorf("FinalizeOrder with the account key = %v, want ErrCertKeyIsAccountKey", err)
	}
}

// TestProblemTypes pins the constant of every error type listed in RFC
// 8555 §6.7, and of the extensions, to its URN.
func TestProblemTypes(t *testing.T) {
	for name, got := range map[string]string{
		"accountDoesNotExist":     ProblemAccountDoesNotExist,
		"alreadyRevoked":          ProblemAlreadyRevoked,
		"badCSR":                  ProblemBadCSR,
		"badNonce":                ProblemBadNonce,
		"badPublicKey":            ProblemBadPublicKey,
		"badRevocationReason":     ProblemBadRevocationReason,
		"badSignatureAlgorithm":   ProblemBadSignatureAlgorithm,
		"caa":                     ProblemCAA,
		"compound":                ProblemCompound,
		"connection":              ProblemConnection,
		"dns":                     ProblemDNS,
		"externalAccountRequired": ProblemExternalAccountRequired,
		"incorrectResponse":       ProblemIncorrectResponse,
		"invalidContact":          ProblemInvalidContact,
		"malformed":               ProblemMalformed,
		"orderNotReady":           ProblemOrderNotReady,
		"rateLimited":             ProblemRateLimited,
		"rejectedIdentifier":      ProblemRejectedIdentifier,
		"serverInternal":          ProblemServerInternal,
		"tls":                     ProblemTLS,
		"unauthorized":            ProblemUnauthorized,
		"unsupportedContact":      ProblemUnsupportedContact,
		"unsupportedIdentifier":   ProblemUnsupportedIdentifier,
		"userActionRequired":      ProblemUserActionRequired,
		"alreadyReplaced":         ProblemAlreadyReplaced, // RFC 9773 §7.4
		"invalidProfile":          ProblemInvalidProfile,  // draft-ietf-acme-profiles
	} {
		if want := "urn:ietf:params:acme:error:" + name; got != want {
			t.Errorf("constant for %s = %q, want %q", name, got, want)
		}
	}
}

func TestRevokeReasonChecked(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/revoke", func(w http.ResponseWriter, req fakeRequest) {})
	c := f.client()
	for _, reason := range []int{-1, 7, 11} {
		if err := c.RevokeCertificate(ctxT(t), acct, []byte{1}, reason); err == nil {
			t.Errorf("RevokeCertificate(reason %d) succeeded, want an error", reason)
		}
	}
	if n := len(f.posts("/revoke")); n != 0 {
		t.Errorf("%d revocations with invalid reasons were sent, want 0", n)
	}
	for _, reason := range []int{ReasonUnspecified, ReasonRemoveFromCRL, ReasonAACompromise} {
		if err := c.RevokeCertificate(ctxT(t), acct, []byte{1}, reason); err != nil {
			t.Errorf("RevokeCertificate(reason %d) = %v", reason, err)
		}
	}
}
