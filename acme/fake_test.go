package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// fakeCA is a small ACME server for what Pebble cannot do (newAuthz,
// misbehaving servers). Every POST is verified as a JWS: signature, url
// header, fresh nonce. Handlers get the verified payload.
type fakeCA struct {
	t   *testing.T
	srv *httptest.Server
	// dir overrides directory entries (e.g. to inject http URLs).
	dir map[string]string
	// dirNonce sends a Replay-Nonce with the directory too. Pebble and
	// Boulder send one only from newNonce and in answers to POSTs.
	dirNonce bool

	mu        sync.Mutex
	nonce     int
	seen      map[string]bool
	requests  []fakeRequest
	heads     int
	handlers  map[string]func(w http.ResponseWriter, req fakeRequest)
	gets      map[string]http.HandlerFunc
	accountPK any
}

type fakeRequest struct {
	Path      string
	Nonce     string
	Signature string
	Payload   []byte
	Header    jose.Header
}

var testAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

func newFakeCA(t *testing.T) *fakeCA {
	f := &fakeCA{t: t, seen: map[string]bool{}, handlers: map[string]func(http.ResponseWriter, fakeRequest){}, dir: map[string]string{}}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCA) client() *Client {
	return &Client{DirectoryURL: f.srv.URL + "/dir", HTTPClient: f.srv.Client(), PollInterval: 5e6, transientBackoff: time.Millisecond}
}

func (f *fakeCA) url(p string) string { return f.srv.URL + p }

// handleGet sets the answer to unauthenticated GETs at path.
func (f *fakeCA) handleGet(path string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gets == nil {
		f.gets = map[string]http.HandlerFunc{}
	}
	f.gets[path] = h
}

// handle sets the answer to POSTs at path.
func (f *fakeCA) handle(path string, h func(w http.ResponseWriter, req fakeRequest)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[path] = h
}

func (f *fakeCA) posts(path string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeCA) newNonce() string {
	f.nonce++
	return fmt.Sprintf("nonce-%d", f.nonce)
}

func (f *fakeCA) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.URL.Path != "/dir" || f.dirNonce {
		w.Header().Set("Replay-Nonce", f.newNonce())
	}
	f.mu.Unlock()
	switch {
	case r.URL.Path == "/dir":
		d := map[string]string{"newNonce": f.url("/nonce"), "newAccount": f.url("/acct"), "newOrder": f.url("/order"),
			"revokeCert": f.url("/revoke"), "keyChange": f.url("/keychange")}
		for k, v := range f.dir {
			d[k] = v
		}
		json.NewEncoder(w).Encode(d)
		return
	case r.URL.Path == "/nonce":
		f.mu.Lock()
		f.heads++
		f.mu.Unlock()
		return
	case r.Method != http.MethodPost:
		f.mu.Lock()
		h := f.gets[r.URL.Path]
		f.mu.Unlock()
		if r.Method != http.MethodGet || h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	jws, err := jose.ParseSignedJSON(string(body), testAlgs)
	if err != nil {
		f.t.Errorf("fake CA: %s: parsing JWS: %v", r.URL.Path, err)
		http.Error(w, err.Error(), 400)
		return
	}
	sig := jws.Signatures[0]
	var pub any
	if sig.Protected.JSONWebKey != nil {
		pub = sig.Protected.JSONWebKey.Key
	} else {
		pub = f.accountPK
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		f.t.Errorf("fake CA: %s: bad signature: %v", r.URL.Path, err)
		http.Error(w, err.Error(), 400)
		return
	}
	if got := sig.Protected.ExtraHeaders["url"]; got != f.url(r.URL.Path) {
		f.t.Errorf("fake CA: JWS url = %v, want %s", got, f.url(r.URL.Path))
	}
	req := fakeRequest{Path: r.URL.Path, Nonce: sig.Protected.Nonce, Signature: string(sig.Signature), Payload: payload, Header: sig.Protected}
	f.mu.Lock()
	if f.seen[req.Nonce] {
		f.t.Errorf("fake CA: nonce %q reused", req.Nonce)
	}
	f.seen[req.Nonce] = true
	f.requests = append(f.requests, req)
	h := f.handlers[r.URL.Path]
	f.mu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h(w, req)
}

// account returns an account the fake CA verifies kid requests with.
func (f *fakeCA) account() Account {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	f.accountPK = k.Public()
	return Account{Key: k, URL: f.url("/acct/1")}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, typ, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":%q,"detail":%q,"status":%d}`, typ, detail, status)
}
