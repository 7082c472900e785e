package engine

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// acmeRecorder sits between the engine and a real Pebble: it records the
// decoded JWS payload of every POST by path, and answers a request with
// the problem refuse returns (a fault Pebble cannot produce), if any.
type acmeRecorder struct {
	rt     http.RoundTripper
	refuse func(path string, payload []byte) *acme.Problem
	mu     sync.Mutex
	posts  map[string][][]byte
}

// jwsPayload returns the decoded payload of the JWS POSTed in r and puts
// the body back for the real transport.
func jwsPayload(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	var jws struct{ Payload string }
	if err := json.Unmarshal(b, &jws); err != nil {
		return nil, err
	}
	return base64.RawURLEncoding.DecodeString(jws.Payload)
}

func (a *acmeRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || r.Body == nil {
		return a.rt.RoundTrip(r)
	}
	payload, err := jwsPayload(r)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.posts == nil {
		a.posts = map[string][][]byte{}
	}
	a.posts[r.URL.Path] = append(a.posts[r.URL.Path], payload)
	a.mu.Unlock()
	if a.refuse != nil {
		if p := a.refuse(r.URL.Path, payload); p != nil {
			body, _ := json.Marshal(p)
			return &http.Response{
				StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header:  http.Header{"Content-Type": {"application/problem+json"}},
				Body:    io.NopCloser(bytes.NewReader(body)),
				Request: r, ContentLength: int64(len(body)),
			}, nil
		}
	}
	return a.rt.RoundTrip(r)
}

// payloads returns the recorded payloads of POSTs to path.
func (a *acmeRecorder) payloads(path string) [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.posts[path]
}

// TestEABAlgorithm runs against a Pebble that requires external account
// binding: the binding is signed with eab_algorithm (HS384, HS512, as the
// JWS header sent says), the HMAC key is read only while no account is
// stored (a second run with the variable unset renews with the stored
// account), and creating an account without it fails naming the key and
// its line, before the CA is asked.
func TestEABAlgorithm(t *testing.T) {
	// HS512 needs a key of at least 64 bytes: bytes 0 to 63, base64url.
	keys := map[string]string{
		"kid-384": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
		"kid-512": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw",
	}
	srv := pebbletest.Start(t, pebbletest.Options{EABRequired: true, EABKeys: keys, AlwaysValid: true})
	for _, alg := range []string{config.HS384, config.HS512} {
		t.Run(alg, func(t *testing.T) {
			kid := "kid-" + alg[2:]
			env := "ACMEHOOK_TEST_EAB_" + alg
			t.Setenv(env, keys[kid])
			e := newEnv(t)
			e.srv = srv
			e.caExtra = fmt.Sprintf("eab_kid = %q\neab_hmac_key_env = %q\neab_algorithm = %q", kid, env, alg)
			cfg := e.write(fmt.Sprintf("[[certificate]]\nname = \"eab\"\ndomains = [\"eab-%s.example.com\"]\nsolver = \"webroot\"\n", alg))
			rec := &acmeRecorder{rt: srv.HTTPClient().Transport}
			o := Options{HTTPClient: &http.Client{Transport: rec}}
			if r := e.runWith(cfg, o, RunOptions{})["eab"]; r.Action != ActionIssued || r.Err != nil {
				t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
			}
			accounts := rec.payloads("/sign-me-up")
			if len(accounts) != 1 {
				t.Fatalf("newAccount requests = %d, want 1", len(accounts))
			}
			var req struct {
				EAB struct{ Protected string } `json:"externalAccountBinding"`
			}
			if err := json.Unmarshal(accounts[0], &req); err != nil {
				t.Fatal(err)
			}
			hdr, err := base64.RawURLEncoding.DecodeString(req.EAB.Protected)
			if err != nil {
				t.Fatal(err)
			}
			var h struct{ Alg, Kid string }
			if err := json.Unmarshal(hdr, &h); err != nil || h.Alg != alg || h.Kid != kid {
				t.Errorf("EAB protected header = %s (%v), want alg %s, kid %s", hdr, err, alg, kid)
			}

			os.Unsetenv(env) // t.Setenv restores it
			if r := e.runWith(cfg, o, RunOptions{Force: true})["eab"]; r.Action != ActionRenewed || r.Err != nil {
				t.Fatalf("run with a stored account and no HMAC key = %s %v, want renewed", r.Action, r.Err)
			}
			if n := len(rec.payloads("/sign-me-up")); n != 1 {
				t.Errorf("newAccount requests = %d, want still 1 (the stored account is used)", n)
			}

			fresh := newEnv(t)
			fresh.srv, fresh.caExtra = srv, e.caExtra
			cfg = fresh.write("[[certificate]]\nname = \"eab\"\ndomains = [\"eab-fresh.example.com\"]\nsolver = \"webroot\"\n")
			r := fresh.runWith(cfg, o, RunOptions{})["eab"]
			want := fmt.Sprintf("acmehook.toml:%d: ca.eab_hmac_key_env: creating the account needs the EAB HMAC key: environment variable %s is not set or empty", lineOf(t, fresh.config, "eab_hmac_key_env"), env)
			if r.Action != ActionFailed || r.Err == nil || !strings.Contains(r.Err.Error(), want) {
				t.Errorf("new account without the HMAC key = %s %v, want failed with %q", r.Action, r.Err, want)
			}
			if n := len(rec.payloads("/sign-me-up")); n != 1 {
				t.Errorf("newAccount requests = %d, want still 1 (nothing sent without the key)", n)
			}
		})
	}
}

// lineOf returns the 1-based line of text where key is set.
func lineOf(t *testing.T, text, key string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), key+" ") {
			return i + 1
		}
	}
	t.Fatalf("%s not in the configuration", key)
	return 0
}

// TestProfiles runs against a Pebble offering "default" (90 days) and
// "shortlived" (6 days): an IP address certificate gets shortlived with
// profile = auto (the default), a DNS name none (Pebble picks one), a named
// profile is sent as named; each stored version records the profile the
// CA applied, which the status shows, and a second run orders nothing. A
// profile the directory does not list is a warning (also from
// ProfileWarnings, as check prints it) and the CA's refusal.
func TestProfiles(t *testing.T) {
	srv := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	e := newEnv(t)
	e.srv, e.logs = srv, &bytes.Buffer{}
	cfg := e.write(`
[[certificate]]
name = "ip"
domains = ["127.0.0.1"]
solver = "webroot"
self_check = false

[[certificate]]
name = "dns"
domains = ["profile-dns.example.com"]
solver = "webroot"

[[certificate]]
name = "named"
domains = ["profile-named.example.com"]
solver = "webroot"
profile = "default"

[[certificate]]
name = "gold"
domains = ["profile-gold.example.com"]
solver = "webroot"
profile = "gold"
`)
	rec := &acmeRecorder{rt: srv.HTTPClient().Transport}
	o := Options{HTTPClient: &http.Client{Transport: rec}, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), e.logs), nil))}
	res := e.runWith(cfg, o, RunOptions{})
	sent := map[string]string{} // identifier -> profile sent
	for _, p := range rec.payloads("/order-plz") {
		var req struct {
			Identifiers []acme.Identifier
			Profile     *string
		}
		if err := json.Unmarshal(p, &req); err != nil {
			t.Fatal(err)
		}
		v := "(none)"
		if req.Profile != nil {
			v = *req.Profile
		}
		sent[req.Identifiers[0].Value] = v
	}
	tests := []struct {
		name, ident, sent, applied string
		life                       time.Duration
	}{
		{"ip", "127.0.0.1", "shortlived", "shortlived", 6 * 24 * time.Hour},
		{"dns", "profile-dns.example.com", "(none)", "", 0},
		{"named", "profile-named.example.com", "default", "default", 90 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := res[tt.name]; r.Action != ActionIssued || r.Err != nil {
				t.Fatalf("run = %s %v, want issued", r.Action, r.Err)
			}
			if sent[tt.ident] != tt.sent {
				t.Errorf("profile sent in newOrder = %s, want %s", sent[tt.ident], tt.sent)
			}
			v := e.current(cfg, tt.name)
			order := e.order(cfg, v)
			if order.Profile == "" || v.Info.Profile != order.Profile {
				t.Errorf("stored profile = %q, want the order's %q", v.Info.Profile, order.Profile)
			}
			if tt.applied != "" && v.Info.Profile != tt.applied {
				t.Errorf("stored profile = %q, want %q", v.Info.Profile, tt.applied)
			}
			if life := v.Info.NotAfter.Sub(v.Info.NotBefore) + time.Second; tt.life != 0 && life != tt.life {
				t.Errorf("lifetime = %s, want %s", life, tt.life)
			}
			var st Status
			e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
				var err error
				if st, err = eng.Status(t.Context(), tt.name); err != nil {
					t.Fatal(err)
				}
			})
			if st.Current == nil || st.Current.Profile != v.Info.Profile {
				t.Errorf("Status.Current = %+v, want profile %q", st.Current, v.Info.Profile)
			}
		})
	}
	t.Run("unlisted", func(t *testing.T) {
		r := res["gold"]
		p := problemOf(r.Err)
		if r.Action != ActionFailed || p == nil || p.Type != "urn:ietf:params:acme:error:invalidProfile" {
			t.Fatalf("run = %s %v, want failed with invalidProfile", r.Action, r.Err)
		}
		const warn = `profile \"gold\": the CA's directory does not list it (it lists default, shortlived); requesting it anyway`
		if !strings.Contains(e.logs.String(), warn) {
			t.Errorf("log lacks the warning %s:\n%s", warn, e.logs)
		}
		ws, err := ProfileWarnings(t.Context(), cfg)
		if want := `certificate gold: profile "gold": the CA's directory does not list it (it lists default, shortlived); requesting it anyway`; err != nil || len(ws) != 1 || ws[0] != want {
			t.Errorf("ProfileWarnings = %q, %v; want [%q]", ws, err, want)
		}
	})
	t.Run("second run", func(t *testing.T) {
		srv.Counter().Reset()
		again := e.runWith(cfg, o, RunOptions{Names: []string{"ip", "dns", "named"}})
		for n, r := range again {
			if r.Action != ActionNone || r.Err != nil {
				t.Errorf("%s: second run = %s %q %v, want nothing ordered", n, r.Action, r.Reason, r.Err)
			}
		}
	})
}

// TestOrderValidity: validity and not_before/not_after are sent in the
// new order and Pebble, which honours them, issues with exactly that
// validity; a CA that refuses them (as Let's Encrypt does; a fault here,
// since Pebble accepts them) fails the certificate with its problem type
// and detail, said once, and nothing is stored.
func TestOrderValidity(t *testing.T) {
	srv := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true})
	e := newEnv(t)
	e.srv = srv
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	end := start.Add(50 * time.Hour)
	cfg := e.write(fmt.Sprintf(`
[[certificate]]
name = "valid72"
domains = ["valid72.example.com"]
solver = "webroot"
validity = "72h"

[[certificate]]
name = "window"
domains = ["window.example.com"]
solver = "webroot"
not_before = %s
not_after = %s
`, start.Format(time.RFC3339), end.Format(time.RFC3339)))
	before := time.Now().Truncate(time.Second)
	res := e.runWith(cfg, Options{}, RunOptions{})
	after := time.Now()
	for n, r := range res {
		if r.Action != ActionIssued || r.Err != nil {
			t.Fatalf("%s = %s %v, want issued", n, r.Action, r.Err)
		}
	}
	leaf, _ := parseLeaf(e.current(cfg, "valid72").CertPEM)
	if na := leaf.NotAfter; na.Before(before.Add(72*time.Hour)) || na.After(after.Add(72*time.Hour)) {
		t.Errorf("validity 72h: not after = %s, want 72h after the order (%s)", na, before)
	}
	leaf, _ = parseLeaf(e.current(cfg, "window").CertPEM)
	if !leaf.NotBefore.Equal(start) || !leaf.NotAfter.Equal(end) {
		t.Errorf("window: validity = %s – %s, want %s – %s", leaf.NotBefore, leaf.NotAfter, start, end)
	}

	t.Run("refused", func(t *testing.T) {
		const detail = "NotBefore and NotAfter are not supported"
		rec := &acmeRecorder{rt: srv.HTTPClient().Transport, refuse: func(path string, payload []byte) *acme.Problem {
			if strings.HasSuffix(path, "/order-plz") && bytes.Contains(payload, []byte(`"notAfter"`)) {
				return &acme.Problem{Type: acme.ProblemMalformed, Detail: detail, Status: 400}
			}
			return nil
		}}
		e := newEnv(t)
		e.srv = srv
		cfg := e.write("[[certificate]]\nname = \"refused\"\ndomains = [\"refused.example.com\"]\nsolver = \"webroot\"\nvalidity = \"72h\"\n")
		r := e.runWith(cfg, Options{HTTPClient: &http.Client{Transport: rec}}, RunOptions{})["refused"]
		p := problemOf(r.Err)
		if r.Action != ActionFailed || p == nil || p.Type != acme.ProblemMalformed || p.Detail != detail {
			t.Fatalf("run = %s %v, want failed with the CA's malformed problem", r.Action, r.Err)
		}
		msg := r.Err.Error()
		if strings.Count(msg, detail) != 1 || strings.Count(msg, "malformed") != 1 {
			t.Errorf("error %q: want the problem type and detail once each", msg)
		}
		if _, err := os.Stat(filepath.Join(cfg.Storage, "certificates", "refused", "current")); err == nil {
			t.Errorf("a certificate was stored although the CA refused the order")
		}
	})
}
