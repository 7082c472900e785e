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
				jws, err := jose.ParseSigned(string(raw), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg)})
				if err != nil {
					t.Fatalf("ParseSigned with %s only: %v", wantAlg, err)
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
		jws, err := jose.ParseSigned(string(raw), []jose.SignatureAlgorithm{jose.SignatureAlgorithm(want)})
		if err != nil {
			t.Fatalf("ParseSigned(%s): %v", want, err)
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
	jws, err := jose.ParseSigned(string(inner), []jose.SignatureAlgorithm{jose.ES384})
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
