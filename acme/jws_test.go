package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func testKeys(t *testing.T) map[string]crypto.Signer {
	t.Helper()
	keys := map[string]crypto.Signer{}
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys["RS256"] = r
	for alg, curve := range map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()} {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[alg] = k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys["EdDSA"] = ed
	return keys
}

func TestSignJWS(t *testing.T) {
	for wantAlg, key := range testKeys(t) {
		for _, tt := range []struct {
			name    string
			kid     string
			payload []byte
		}{
			{"jwk", "", []byte(`{"termsOfServiceAgreed":true}`)},
			{"kid", "https://ca.example/acct/1", []byte(`{"identifiers":[]}`)},
			{"kid POST-as-GET", "https://ca.example/acct/1", nil},
		} {
			t.Run(wantAlg+" "+tt.name, func(t *testing.T) {
				raw, err := signJWS(key, tt.kid, "nonce-1", "https://ca.example/x", tt.payload)
				if err != nil {
					t.Fatal(err)
				}
				// RFC 8555 §6.2: flattened JSON with exactly these members.
				var members map[string]json.RawMessage
				if err := json.Unmarshal(raw, &members); err != nil || len(members) != 3 || members["payload"] == nil || members["protected"] == nil || members["signature"] == nil {
					t.Fatalf("JWS members = %s, want protected, payload, signature", raw)
				}
				if tt.payload == nil && string(members["payload"]) != `""` {
					t.Errorf("POST-as-GET payload = %s, want \"\"", members["payload"])
				}
				jws, err := jose.ParseSignedJSON(string(raw), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg)})
				if err != nil {
					t.Fatalf("ParseSignedJSON with %s only: %v", wantAlg, err)
				}
				h := jws.Signatures[0].Protected
				if h.Algorithm != wantAlg || h.Nonce != "nonce-1" || h.ExtraHeaders["url"] != "https://ca.example/x" {
					t.Errorf("header = %+v, want alg %s, nonce, url", h, wantAlg)
				}
				if tt.kid == "" {
					if h.JSONWebKey == nil || h.KeyID != "" {
						t.Fatalf("header = %+v, want jwk and no kid", h)
					}
					if !h.JSONWebKey.IsPublic() {
						t.Error("embedded JWK is not public")
					}
				} else if h.KeyID != tt.kid || h.JSONWebKey != nil {
					t.Errorf("header = %+v, want kid %s and no jwk", h, tt.kid)
				}
				got, err := jws.Verify(key.Public())
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if string(got) != string(tt.payload) {
					t.Errorf("payload = %q, want %q", got, tt.payload)
				}
			})
		}
	}
}

func TestSignJWSUnsupportedKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signJWS(k, "", "n", "https://ca.example/x", nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("signJWS(P-224) = %v, want ErrUnsupportedKey", err)
	}
}

func TestSignEAB(t *testing.T) {
	acctKey := testKeys(t)["ES256"]
	mac := make([]byte, 64)
	rand.Read(mac)
	for _, alg := range []string{"", "HS256", "HS384", "HS512"} {
		raw, err := signEAB(&ExternalAccountBinding{KeyID: "kid-7", Key: mac, Algorithm: alg}, acctKey, "https://ca.example/new-acct")
		if err != nil {
			t.Fatalf("signEAB(%q): %v", alg, err)
		}
		want := alg
		if want == "" {
			want = "HS256"
		}
		jws, err := jose.ParseSignedJSON(string(raw), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(want)})
		if err != nil {
			t.Fatalf("ParseSignedJSON(%s): %v", want, err)
		}
		h := jws.Signatures[0].Protected
		if h.KeyID != "kid-7" || h.ExtraHeaders["url"] != "https://ca.example/new-acct" || h.Nonce != "" || h.JSONWebKey != nil {
			t.Errorf("EAB header = %+v, want kid, url, no nonce, no jwk (RFC 8555 §7.3.4)", h)
		}
		payload, err := jws.Verify(mac)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(payload); err != nil || !jwk.IsPublic() || !acctKey.Public().(*ecdsa.PublicKey).Equal(jwk.Key) {
			t.Errorf("EAB payload = %s, want the account's public JWK", payload)
		}
	}
	if _, err := signEAB(&ExternalAccountBinding{KeyID: "k", Key: mac, Algorithm: "RS256"}, acctKey, "u"); err == nil {
		t.Error("signEAB(RS256) succeeded, want an error")
	}
	if s := (ExternalAccountBinding{KeyID: "k", Key: []byte("secret")}).String(); s == "" || strings.Contains(s, "secret") {
		t.Errorf("String() = %q leaks the key", s)
	}
}

func TestChangeAccountKeyJWS(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	newKey := testKeys(t)["ES384"]
	var inner []byte
	f.handle("/keychange", func(w http.ResponseWriter, req fakeRequest) {
		if req.Header.KeyID != acct.URL {
			t.Errorf("outer JWS kid = %q, want the account URL", req.Header.KeyID)
		}
		inner = req.Payload
		writeJSON(w, 200, map[string]string{"status": "valid"})
	})
	rolled, err := f.client().ChangeAccountKey(ctxT(t), acct, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if rolled.Key != newKey || rolled.URL != acct.URL {
		t.Errorf("ChangeAccountKey = %+v, want the new key and the same URL", rolled)
	}
	// RFC 8555 §7.3.5: the inner JWS is signed by the new key, carries it
	// as jwk, has the same url and no nonce; its payload names the account
	// and the old key.
	jws, err := jose.ParseSignedJSON(string(inner), []jose.SignatureAlgorithm{jose.ES384})
	if err != nil {
		t.Fatalf("inner JWS: %v", err)
	}
	h := jws.Signatures[0].Protected
	if h.JSONWebKey == nil || h.Nonce != "" || h.KeyID != "" || h.ExtraHeaders["url"] != f.url("/keychange") {
		t.Errorf("inner header = %+v", h)
	}
	payload, err := jws.Verify(newKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Account string          `json:"account"`
		OldKey  jose.JSONWebKey `json:"oldKey"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	if p.Account != acct.URL || !p.OldKey.IsPublic() || !acct.Key.Public().(*ecdsa.PublicKey).Equal(p.OldKey.Key) {
		t.Errorf("inner payload = %s, want account URL and old public key", payload)
	}
}

// TestRequestAuthentication checks, for every operation, what the server
// receives: a "jwk" header (newAccount and revocation by the certificate's
// key, RFC 8555 §6.2) or the account's "kid", and an empty payload for
// POST-as-GET (§6.3).
func TestRequestAuthentication(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	certKey := testKeys(t)["ES384"]
	certPEM := selfSignedPEM(t)
	certs, err := ParseChainPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.dir["newAuthz"] = f.url("/new-authz")
	authz := map[string]any{"status": "pending", "identifier": DNS("a.example"), "challenges": []map[string]string{
		{"type": "http-01", "url": f.url("/chall/1"), "status": "pending", "token": "DGyRejmCefe7v4NfDGDKfA"}}}
	for path, h := range map[string]func(w http.ResponseWriter, req fakeRequest){
		"/acct": func(w http.ResponseWriter, req fakeRequest) {
			w.Header().Set("Location", acct.URL)
			writeJSON(w, 200, map[string]string{"status": "valid"})
		},
		"/acct/1": func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, map[string]string{"status": "valid"}) },
		"/order": func(w http.ResponseWriter, req fakeRequest) {
			w.Header().Set("Location", f.url("/order/1"))
			writeJSON(w, 201, orderJSON(f, StatusPending))
		},
		"/order/1": func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusPending)) },
		"/authz/1": func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, authz) },
		"/new-authz": func(w http.ResponseWriter, req fakeRequest) {
			w.Header().Set("Location", f.url("/authz/1"))
			writeJSON(w, 201, authz)
		},
		"/chall/1": func(w http.ResponseWriter, req fakeRequest) {
			writeJSON(w, 200, authz["challenges"].([]map[string]string)[0])
		},
		"/finalize/1": func(w http.ResponseWriter, req fakeRequest) {
			o := orderJSON(f, StatusValid)
			o["certificate"] = f.url("/cert/1")
			writeJSON(w, 200, o)
		},
		"/cert/1":    func(w http.ResponseWriter, req fakeRequest) { w.Write(certPEM) },
		"/revoke":    func(w http.ResponseWriter, req fakeRequest) {},
		"/keychange": func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, map[string]string{"status": "valid"}) },
	} {
		f.handle(path, h)
	}
	csr, err := NewCSR(certKey, []Identifier{DNS("a.example")})
	if err != nil {
		t.Fatal(err)
	}
	order := Order{URL: f.url("/order/1"), Finalize: f.url("/finalize/1")}
	ch := Challenge{Type: ChallengeHTTP01, URL: f.url("/chall/1"), Token: "DGyRejmCefe7v4NfDGDKfA"}

	tests := []struct {
		name string
		call func(c *Client) error
		path string
		// jwk is the key expected in a "jwk" header; nil means "kid".
		jwk     crypto.Signer
		payload string // "" is POST-as-GET; "*" any non-empty payload
	}{
		{"NewAccount", func(c *Client) error {
			_, err := c.NewAccount(ctxT(t), Account{Key: acct.Key, Contact: []string{"mailto:a@example.com"}, TermsOfServiceAgreed: true}, nil)
			return err
		}, "/acct", acct.Key, `{"contact":["mailto:a@example.com"],"termsOfServiceAgreed":true}`},
		{"FindAccount", func(c *Client) error { _, err := c.FindAccount(ctxT(t), acct.Key); return err }, "/acct", acct.Key, `{"onlyReturnExisting":true}`},
		{"GetAccount", func(c *Client) error { _, err := c.GetAccount(ctxT(t), acct); return err }, "/acct/1", nil, ""},
		{"UpdateAccount", func(c *Client) error { _, err := c.UpdateAccount(ctxT(t), acct); return err }, "/acct/1", nil, `{"contact":[]}`},
		{"AgreeToTerms", func(c *Client) error { _, err := c.AgreeToTerms(ctxT(t), acct); return err }, "/acct/1", nil, `{"contact":[],"termsOfServiceAgreed":true}`},
		{"DeactivateAccount", func(c *Client) error { _, err := c.DeactivateAccount(ctxT(t), acct); return err }, "/acct/1", nil, `{"status":"deactivated"}`},
		{"ChangeAccountKey", func(c *Client) error { _, err := c.ChangeAccountKey(ctxT(t), acct, testKeys(t)["ES256"]); return err }, "/keychange", nil, "*"},
		{"NewOrder", func(c *Client) error {
			_, err := c.NewOrder(ctxT(t), acct, Order{Identifiers: []Identifier{DNS("a.example")}})
			return err
		}, "/order", nil, `{"identifiers":[{"type":"dns","value":"a.example"}]}`},
		{"GetOrder", func(c *Client) error { _, err := c.GetOrder(ctxT(t), acct, order.URL); return err }, "/order/1", nil, ""},
		{"NewAuthorization", func(c *Client) error { _, err := c.NewAuthorization(ctxT(t), acct, DNS("a.example")); return err }, "/new-authz", nil, "*"},
		{"GetAuthorization", func(c *Client) error { _, err := c.GetAuthorization(ctxT(t), acct, f.url("/authz/1")); return err }, "/authz/1", nil, ""},
		{"AcceptChallenge", func(c *Client) error { _, err := c.AcceptChallenge(ctxT(t), acct, ch); return err }, "/chall/1", nil, "{}"},
		{"FinalizeOrder", func(c *Client) error { _, err := c.FinalizeOrder(ctxT(t), acct, order, csr); return err }, "/finalize/1", nil, "*"},
		{"FetchCertificate", func(c *Client) error { _, err := c.FetchCertificate(ctxT(t), acct, f.url("/cert/1")); return err }, "/cert/1", nil, ""},
		{"RevokeCertificate", func(c *Client) error {
			return c.RevokeCertificate(ctxT(t), acct, certs[0].Raw, ReasonSuperseded)
		}, "/revoke", nil, `{"certificate":"` + b64.EncodeToString(certs[0].Raw) + `","reason":4}`},
		{"RevokeCertificateWithKey", func(c *Client) error {
			return c.RevokeCertificateWithKey(ctxT(t), certKey, certs[0].Raw, ReasonKeyCompromise)
		}, "/revoke", certKey, `{"certificate":"` + b64.EncodeToString(certs[0].Raw) + `","reason":1}`},
	}
	c := f.client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.posts(tt.path))
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			reqs := f.posts(tt.path)
			if len(reqs) != before+1 {
				t.Fatalf("%d requests to %s, want 1", len(reqs)-before, tt.path)
			}
			req := reqs[before]
			if tt.jwk != nil {
				if req.Header.JSONWebKey == nil || req.Header.KeyID != "" {
					t.Errorf("header has kid %q, jwk %v; want a jwk and no kid", req.Header.KeyID, req.Header.JSONWebKey)
				} else if !tt.jwk.Public().(*ecdsa.PublicKey).Equal(req.Header.JSONWebKey.Key) {
					t.Error("jwk header carries the wrong key")
				}
			} else if req.Header.KeyID != acct.URL || req.Header.JSONWebKey != nil {
				t.Errorf("header has kid %q, jwk %v; want kid %s and no jwk", req.Header.KeyID, req.Header.JSONWebKey, acct.URL)
			}
			switch got := string(req.Payload); {
			case tt.payload == "*" && got == "":
				t.Error("payload is empty, want a request object")
			case tt.payload != "*" && got != tt.payload:
				t.Errorf("payload = %q, want %q", got, tt.payload)
			}
		})
	}
}
