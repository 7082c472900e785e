package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func orderJSON(f *fakeCA, status string) map[string]any {
	return map[string]any{"status": status, "identifiers": []Identifier{DNS("a.example")},
		"authorizations": []string{f.url("/authz/1")}, "finalize": f.url("/finalize/1")}
}

func TestBadNonceRetriedWithFreshSignature(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	rejects := 2
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		if rejects > 0 {
			rejects--
			writeProblem(w, 400, ProblemBadNonce, "stale nonce")
			return
		}
		writeJSON(w, 200, orderJSON(f, StatusPending))
	})
	c := f.client()
	o, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
	if err != nil || o.Status != StatusPending {
		t.Fatalf("GetOrder = %+v, %v, want pending", o, err)
	}
	reqs := f.posts("/order/1")
	if len(reqs) != 3 {
		t.Fatalf("server saw %d requests, want 3", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		if reqs[i].Nonce == reqs[i-1].Nonce || reqs[i].Signature == reqs[i-1].Signature {
			t.Errorf("retry %d reused nonce or signature of the previous attempt", i)
		}
	}
	if f.heads != 1 {
		t.Errorf("newNonce HEADs = %d, want 1 (retries use the nonce of the badNonce answer)", f.heads)
	}
}

func TestBadNonceRetryBounded(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		writeProblem(w, 400, ProblemBadNonce, "always stale")
	})
	c := f.client()
	c.MaxRetries = 3
	_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
	var p *Problem
	if !errors.As(err, &p) || p.Type != ProblemBadNonce {
		t.Fatalf("GetOrder = %v, want a badNonce problem", err)
	}
	if n := len(f.posts("/order/1")); n != 4 {
		t.Errorf("attempts = %d, want 4 (1 + MaxRetries)", n)
	}
}

func TestNoncePool(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusPending)) })
	c := f.client()
	for range 5 {
		if _, err := c.GetOrder(ctxT(t), acct, f.url("/order/1")); err != nil {
			t.Fatal(err)
		}
	}
	if f.heads != 1 {
		t.Errorf("newNonce HEADs for 5 requests = %d, want 1", f.heads)
	}
}

// TestNonceSingleFlight: 20 requests that start together with an empty
// pool send one newNonce between them; the others wait for the nonces
// the answers bring.
func TestNonceSingleFlight(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusPending)) })
	c := f.client()
	if _, err := c.Directory(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	errs := make(chan error, 20)
	for range 20 {
		go func() {
			<-start
			_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
			errs <- err
		}()
	}
	close(start)
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	heads := f.heads
	f.mu.Unlock()
	if heads != 1 {
		t.Errorf("newNonce HEADs for 20 concurrent requests = %d, want 1", heads)
	}
	if n := len(f.posts("/order/1")); n != 20 {
		t.Errorf("requests = %d, want 20", n)
	}
}

// TestNonceStreams: with Streams, a request that finds the pool empty asks
// newNonce (one at a time) while fewer nonces than the caller's streams
// are in flight, instead of waiting for an answer. The server answers the
// requests only once all of them are at the server at once, which
// without Streams (and with an hour's grace before a waiting request may
// ask newNonce) they never are; the count of newNonce requests is the
// streams', one per nonce the pool grew by.
func TestNonceStreams(t *testing.T) {
	const streams = 4
	f := newFakeCA(t)
	acct := f.account()
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		mu.Lock()
		if arrived++; arrived == streams {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second): // bounded: fail, do not hang
			t.Errorf("the %d requests were never in flight at once", streams)
		}
		writeJSON(w, 200, orderJSON(f, StatusPending))
	})
	c := f.client()
	c.nonceWait = time.Hour
	c.Streams = func() int { return streams }
	errs := make(chan error, streams)
	for range streams {
		go func() {
			_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
			errs <- err
		}()
	}
	for range streams {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	heads := f.heads
	f.mu.Unlock()
	if heads != streams {
		t.Errorf("newNonce HEADs = %d, want %d", heads, streams)
	}
	// The pool holds the four nonces the answers brought: four more
	// requests need no newNonce.
	for range streams {
		if _, err := c.GetOrder(ctxT(t), acct, f.url("/order/1")); err != nil {
			t.Fatal(err)
		}
	}
	if f.mu.Lock(); f.heads != streams {
		t.Errorf("newNonce HEADs after %d more requests = %d, want %d", streams, f.heads, streams)
	}
	f.mu.Unlock()
}

// TestNonceWaitCanceled: a request waiting for a nonce gives up with its
// context.
func TestNonceWaitCanceled(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	block := make(chan struct{})
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		<-block
		writeJSON(w, 200, orderJSON(f, StatusPending))
	})
	c := f.client()
	done := make(chan error, 1)
	go func() {
		_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
		done <- err
	}()
	// Wait until the first request holds the only nonce.
	for len(f.posts("/order/1")) == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	_, err := c.GetOrder(ctx, acct, f.url("/order/1"))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for a nonce") {
		t.Errorf("GetOrder while the only nonce is in flight, cancelled = %v, want waiting for a nonce: context canceled", err)
	}
	close(block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestNonceFromDirectory: a nonce that came with the directory is used, so
// no newNonce request is needed at all.
func TestNonceFromDirectory(t *testing.T) {
	f := newFakeCA(t)
	f.dirNonce = true
	acct := f.account()
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusPending)) })
	c := f.client()
	for range 3 {
		if _, err := c.GetOrder(ctxT(t), acct, f.url("/order/1")); err != nil {
			t.Fatal(err)
		}
	}
	if f.heads != 0 {
		t.Errorf("newNonce HEADs = %d, want 0 (the directory's Replay-Nonce, then each answer's)", f.heads)
	}
}

// TestTransientRefusals: POST-as-GET is retried after a 5xx; newOrder,
// newAccount, finalize and the challenge POST ride out 429 and 5xx within
// the transient budget, each attempt with a fresh nonce (the fake CA
// fails the test on a reused one); other POSTs are not repeated; a
// refusal whose Retry-After does not fit is returned with it.
func TestTransientRefusals(t *testing.T) {
	type step struct {
		status     int
		retryAfter string
	}
	tests := []struct {
		name string
		path string
		// answers are sent in turn; after them the request succeeds.
		answers  []step
		call     func(ctx context.Context, c *Client, f *fakeCA, acct Account) error
		attempts int
		// wantStatus is the refusal returned, 0 for success.
		wantStatus     int
		wantRetryAfter time.Duration
	}{
		{"POST-as-GET after two 503s", "/order/1", []step{{503, ""}, {503, ""}}, getOrder, 3, 0, 0},
		{"newOrder after one 429 with Retry-After", "/order", []step{{429, "1"}}, newOrder, 2, 0, 0},
		{"newOrder after one 503", "/order", []step{{503, ""}}, newOrder, 2, 0, 0},
		{"newOrder refused every time", "/order", []step{{503, ""}, {503, ""}, {503, ""}, {503, ""}, {503, ""}}, newOrder, 1 + MaxTransientRetries, 503, 0},
		{"newOrder 429 beyond the budget", "/order", []step{{429, "3600"}}, newOrder, 1, 429, time.Hour},
		{"newOrder 400 not retried", "/order", []step{{400, ""}}, newOrder, 1, 400, 0},
		{"newAccount after one 503", "/acct", []step{{503, ""}}, newAccount, 2, 0, 0},
		{"finalize after one 503", "/finalize/1", []step{{503, ""}}, finalize, 2, 0, 0},
		{"challenge after one 429", "/chall/1", []step{{429, ""}}, accept, 2, 0, 0},
		{"revocation not retried", "/revoke", []step{{503, ""}}, revoke, 1, 503, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCA(t)
			acct := f.account()
			n := 0
			ok := map[string]func(w http.ResponseWriter, req fakeRequest){
				"/order/1": func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusReady)) },
				"/order": func(w http.ResponseWriter, req fakeRequest) {
					w.Header().Set("Location", f.url("/order/1"))
					writeJSON(w, 201, orderJSON(f, StatusPending))
				},
				"/acct": func(w http.ResponseWriter, req fakeRequest) {
					w.Header().Set("Location", f.url("/acct/1"))
					writeJSON(w, 201, map[string]any{"status": "valid"})
				},
				"/finalize/1": func(w http.ResponseWriter, req fakeRequest) {
					o := orderJSON(f, StatusValid)
					o["certificate"] = f.url("/cert/1")
					writeJSON(w, 200, o)
				},
				"/chall/1": func(w http.ResponseWriter, req fakeRequest) {
					writeJSON(w, 200, map[string]any{"type": "dns-01", "status": "processing"})
				},
				"/revoke": func(w http.ResponseWriter, req fakeRequest) {},
			}
			f.handle(tt.path, func(w http.ResponseWriter, req fakeRequest) {
				if n < len(tt.answers) {
					a := tt.answers[n]
					n++
					if a.retryAfter != "" {
						w.Header().Set("Retry-After", a.retryAfter)
					}
					typ := ProblemServerInternal
					switch {
					case a.status == 429:
						typ = ProblemRateLimited
					case a.status < 500:
						typ = ProblemMalformed
					}
					writeProblem(w, a.status, typ, "refused")
					return
				}
				ok[tt.path](w, req)
			})
			err := tt.call(ctxT(t), f.client(), f, acct)
			if got := len(f.posts(tt.path)); got != tt.attempts {
				t.Errorf("attempts = %d, want %d", got, tt.attempts)
			}
			if tt.wantStatus == 0 {
				if err != nil {
					t.Errorf("err = %v, want success", err)
				}
				return
			}
			var p *Problem
			if !errors.As(err, &p) || p.Status != tt.wantStatus || p.RetryAfter != tt.wantRetryAfter {
				t.Errorf("err = %v, want the %d problem with RetryAfter %s", err, tt.wantStatus, tt.wantRetryAfter)
			}
		})
	}
}

func getOrder(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	_, err := c.GetOrder(ctx, acct, f.url("/order/1"))
	return err
}

func newOrder(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	_, err := c.NewOrder(ctx, acct, Order{Identifiers: []Identifier{DNS("a.example")}})
	return err
}

func newAccount(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	_, err := c.NewAccount(ctx, Account{Key: acct.Key}, nil)
	return err
}

func finalize(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := NewCSR(key, []Identifier{DNS("a.example")})
	if err != nil {
		return err
	}
	_, err = c.FinalizeOrder(ctx, acct, Order{URL: f.url("/order/1"), Finalize: f.url("/finalize/1")}, csr)
	return err
}

func accept(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	_, err := c.AcceptChallenge(ctx, acct, Challenge{Type: "dns-01", URL: f.url("/chall/1"), Token: "tokentokentokentokentoken"})
	return err
}

func revoke(ctx context.Context, c *Client, f *fakeCA, acct Account) error {
	return c.RevokeCertificate(ctx, acct, []byte("a certificate"), ReasonUnspecified)
}

func TestRateLimitedMessage(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Retry-After", "3600")
		writeProblem(w, 429, ProblemRateLimited, "too many certificates")
	})
	_, err := f.client().NewOrder(ctxT(t), acct, Order{Identifiers: []Identifier{DNS("a.example")}})
	var p *Problem
	if !errors.As(err, &p) || p.Type != ProblemRateLimited || p.RetryAfter != time.Hour || p.Method != "POST" || p.URL != f.url("/order") {
		t.Fatalf("NewOrder = %#v, want rateLimited with RetryAfter 1h, method and URL", err)
	}
	if !strings.Contains(err.Error(), "retry after 1h0m0s") {
		t.Errorf("error %q does not mention the retry delay", err)
	}
}

func TestWaitOrderHonoursRetryAfterAndDeadline(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	var times []time.Time
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		times = append(times, time.Now())
		st := StatusProcessing
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
		} else {
			st = StatusValid
		}
		writeJSON(w, 200, orderJSON(f, st))
	})
	c := f.client()
	o, err := c.WaitOrder(ctxT(t), acct, f.url("/order/1"))
	if err != nil || o.Status != StatusValid {
		t.Fatalf("WaitOrder = %+v, %v", o, err)
	}
	if len(times) != 2 || times[1].Sub(times[0]) < 900*time.Millisecond {
		t.Errorf("polls at %v, want 2 at least 1s apart (Retry-After: 1)", times)
	}

	f.handle("/order/2", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 200, orderJSON(f, StatusProcessing))
	})
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	start := time.Now()
	o, err = c.WaitOrder(ctx, acct, f.url("/order/2"))
	if !errors.Is(err, context.DeadlineExceeded) || o.Status != StatusProcessing || time.Since(start) > 2*time.Second {
		t.Errorf("WaitOrder with Retry-After past the deadline = %q, %v after %s, want DeadlineExceeded at once with the last state", o.Status, err, time.Since(start))
	}
	if n := len(f.posts("/order/2")); n != 1 {
		t.Errorf("polls = %d, want 1", n)
	}
}

func TestUntrustedInput(t *testing.T) {
	big := strings.Repeat("x", maxBodySize+10)
	tests := []struct {
		name  string
		setup func(f *fakeCA, c *Client)
		call  func(f *fakeCA, c *Client, acct Account) error
		want  error
	}{
		{"http directory URL", func(f *fakeCA, c *Client) { c.DirectoryURL = "http://127.0.0.1:1/dir" },
			func(f *fakeCA, c *Client, acct Account) error { _, err := c.Directory(ctxT(t)); return err }, ErrInsecureURL},
		{"http URL in directory", func(f *fakeCA, c *Client) { f.dir["newOrder"] = "http://127.0.0.1:1/order" },
			func(f *fakeCA, c *Client, acct Account) error { _, err := c.Directory(ctxT(t)); return err }, ErrInsecureURL},
		{"http Location", func(f *fakeCA, c *Client) {
			f.handle("/order", func(w http.ResponseWriter, req fakeRequest) {
				w.Header().Set("Location", "http://127.0.0.1:1/order/1")
				writeJSON(w, 201, orderJSON(f, StatusPending))
			})
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.NewOrder(ctxT(t), acct, Order{Identifiers: []Identifier{DNS("a.example")}})
			return err
		}, ErrInsecureURL},
		{"http authorization URL", nil, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.GetAuthorization(ctxT(t), acct, "http://127.0.0.1:1/authz/1")
			return err
		}, ErrInsecureURL},
		{"malformed JSON", func(f *fakeCA, c *Client) {
			f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { w.Write([]byte(`{"status": [`)) })
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
			return err
		}, ErrMalformedResponse},
		{"wrong JSON types", func(f *fakeCA, c *Client) {
			f.handle("/authz/1", func(w http.ResponseWriter, req fakeRequest) { w.Write([]byte(`{"challenges": {"a": 1}}`)) })
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.GetAuthorization(ctxT(t), acct, f.url("/authz/1"))
			return err
		}, ErrMalformedResponse},
		{"oversized body", func(f *fakeCA, c *Client) {
			f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { w.Write([]byte(big)) })
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.GetOrder(ctxT(t), acct, f.url("/order/1"))
			return err
		}, ErrResponseTooLarge},
		{"not a certificate chain", func(f *fakeCA, c *Client) {
			f.handle("/cert/1", func(w http.ResponseWriter, req fakeRequest) {
				w.Write([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
			})
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.FetchCertificate(ctxT(t), acct, f.url("/cert/1"))
			return err
		}, ErrMalformedResponse},
		{"http alternate Link", func(f *fakeCA, c *Client) {
			f.handle("/cert/1", func(w http.ResponseWriter, req fakeRequest) {
				w.Header().Add("Link", `<http://127.0.0.1:1/cert/1/alt>;rel="alternate"`)
				w.Write(selfSignedPEM(t))
			})
		}, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.FetchPreferredChain(ctxT(t), acct, f.url("/cert/1"), "some other root")
			return err
		}, ErrInsecureURL},
		{"bad challenge token", nil, func(f *fakeCA, c *Client, acct Account) error {
			_, err := c.AcceptChallenge(ctxT(t), acct, Challenge{Type: ChallengeHTTP01, URL: f.url("/chall/1"), Token: "../../etc/passwd/aaaaaaaaaaaaaaaaaaaaa"})
			if n := len(f.posts("/chall/1")); n != 0 {
				t.Errorf("challenge with a bad token was sent (%d requests)", n)
			}
			return err
		}, ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCA(t)
			acct := f.account()
			c := f.client()
			if tt.setup != nil {
				tt.setup(f, c)
			}
			if err := tt.call(f, c, acct); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAllowInsecureHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"newNonce": "http://" + r.Host + "/n", "newAccount": "http://" + r.Host + "/a", "newOrder": "http://" + r.Host + "/o"})
	}))
	defer srv.Close()
	c := &Client{DirectoryURL: srv.URL, AllowInsecureHTTP: true}
	if _, err := c.Directory(ctxT(t)); err != nil {
		t.Errorf("Directory over http with AllowInsecureHTTP: %v", err)
	}
}

func TestDirectoryFetchedOnce(t *testing.T) {
	var n int
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		writeJSON(w, 200, map[string]any{"newNonce": "https://x.example/n", "newAccount": "https://x.example/a", "newOrder": "https://x.example/o",
			"meta": map[string]any{"termsOfService": "https://x.example/tos", "website": "https://x.example", "caaIdentities": []string{"x.example"},
				"externalAccountRequired": true, "profiles": map[string]string{"classic": "90 days"}}})
	}))
	defer srv.Close()
	c := &Client{DirectoryURL: srv.URL, HTTPClient: srv.Client()}
	if n != 0 {
		t.Fatal("Client made a request before use")
	}
	for range 3 {
		d, err := c.Directory(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		want := Meta{TermsOfService: "https://x.example/tos", Website: "https://x.example", CAAIdentities: []string{"x.example"},
			ExternalAccountRequired: true, Profiles: map[string]string{"classic": "90 days"}}
		if diff := cmp.Diff(want, d.Meta); diff != "" {
			t.Errorf("Meta differs (-want +got):\n%s", diff)
		}
	}
	if n != 1 {
		t.Errorf("directory fetched %d times, want 1", n)
	}
	if d, err := c.RefreshDirectory(ctxT(t)); err != nil || d.Meta.TermsOfService != "https://x.example/tos" {
		t.Fatalf("RefreshDirectory = %+v, %v", d.Meta, err)
	}
	c.Directory(ctxT(t))
	if n != 2 {
		t.Errorf("directory fetched %d times after RefreshDirectory and Directory, want 2 (the refreshed one cached)", n)
	}
}

func TestNewAuthorization(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	c := f.client()
	if _, err := c.NewAuthorization(ctxT(t), acct, DNS("pre.example")); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("NewAuthorization without newAuthz = %v, want ErrNotSupported", err)
	}

	f = newFakeCA(t)
	acct = f.account()
	f.dir["newAuthz"] = f.url("/new-authz")
	f.handle("/new-authz", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Location", f.url("/authz/9"))
		writeJSON(w, 201, map[string]any{"status": "pending", "identifier": DNS("pre.example"),
			"challenges": []map[string]string{{"type": "dns-01", "url": f.url("/chall/9"), "status": "pending", "token": "DGyRejmCefe7v4NfDGDKfA"}}})
	})
	a, err := f.client().NewAuthorization(ctxT(t), acct, DNS("pre.example"))
	if err != nil {
		t.Fatal(err)
	}
	if a.URL != f.url("/authz/9") || a.Identifier != DNS("pre.example") || len(a.Challenges) != 1 {
		t.Errorf("NewAuthorization = %+v", a)
	}
	reqs := f.posts("/new-authz")
	if len(reqs) != 1 || string(reqs[0].Payload) != `{"identifier":{"type":"dns","value":"pre.example"}}` || reqs[0].Header.KeyID != acct.URL {
		t.Errorf("newAuthz request = %+v", reqs)
	}
}

func TestDeactivateAuthorization(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/authz/1", func(w http.ResponseWriter, req fakeRequest) {
		writeJSON(w, 200, map[string]any{"status": "deactivated", "identifier": DNS("a.example"), "challenges": []any{}})
	})
	a, err := f.client().DeactivateAuthorization(ctxT(t), acct, f.url("/authz/1"))
	if err != nil || a.Status != StatusDeactivated {
		t.Fatalf("DeactivateAuthorization = %+v, %v", a, err)
	}
	if got := string(f.posts("/authz/1")[0].Payload); got != `{"status":"deactivated"}` {
		t.Errorf("payload = %s", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"120", 2 * time.Minute, false},
		{" 7 ", 7 * time.Second, false},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, false},
		{"Friday, 02-Jan-26 03:04:15 GMT", 10 * time.Second, false}, // RFC 850
		{"Fri Jan  2 03:04:35 2026", 30 * time.Second, false},       // asctime
		{"Thu, 01 Jan 2026 00:00:00 GMT", 0, false},                 // past
		{"-5", 0, true},
		{"1.5", 0, true},
		{"soon", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseRetryAfter(tt.in, now)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLinks(t *testing.T) {
	got := parseLinks("https://ca.example/cert/1", []string{
		`<https://ca.example/cert/1/alt/1>;rel="alternate", </cert/1/alt/2>; rel=alternate`,
		`<https://ca.example/dir>;rel="index"`,
		`garbage, <https://x.example/a,b>; rel="up"`,
	})
	want := map[string][]string{
		"alternate": {"https://ca.example/cert/1/alt/1", "https://ca.example/cert/1/alt/2"},
		"index":     {"https://ca.example/dir"},
		"up":        {"https://x.example/a,b"},
	}
	if len(got) != len(want) {
		t.Fatalf("parseLinks = %v, want %v", got, want)
	}
	for k, v := range want {
		if strings.Join(got[k], " ") != strings.Join(v, " ") {
			t.Errorf("parseLinks[%s] = %v, want %v", k, got[k], v)
		}
	}
}

func TestNewOrderRequest(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Location", "/order/7") // relative: resolved against the request URL
		o := orderJSON(f, StatusPending)
		var in struct{ Identifiers []Identifier }
		json.Unmarshal(req.Payload, &in)
		o["identifiers"] = in.Identifiers // as a CA echoes them
		writeJSON(w, 201, o)
	})
	nb := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	o, err := f.client().NewOrder(ctxT(t), acct, Order{
		Identifiers: []Identifier{DNS("*.example.com"), ParseIdentifier("2001:db8::1")},
		NotBefore:   nb, NotAfter: nb.Add(24 * time.Hour), Profile: "shortlived", Replaces: "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
		Status: "ignored", Finalize: "https://ignored.example",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.URL != f.url("/order/7") || o.Finalize != f.url("/finalize/1") {
		t.Errorf("order = %+v, want URL from Location", o)
	}
	want := `{"identifiers":[{"type":"dns","value":"*.example.com"},{"type":"ip","value":"2001:db8::1"}],"notBefore":"2026-02-01T00:00:00Z","notAfter":"2026-02-02T00:00:00Z","profile":"shortlived","replaces":"aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"}`
	if got := string(f.posts("/order")[0].Payload); got != want {
		t.Errorf("newOrder payload = %s\nwant %s", got, want)
	}
}

func selfSignedPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// deadlineRecorder records the deadline of each request's context.
type deadlineRecorder struct {
	next      http.RoundTripper
	deadlines []time.Duration // time left when the request was sent; -1 for none
}

func (d *deadlineRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	left := time.Duration(-1)
	if dl, ok := r.Context().Deadline(); ok {
		left = time.Until(dl)
	}
	d.deadlines = append(d.deadlines, left)
	return d.next.RoundTrip(r)
}

func TestRequestTimeout(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusPending)) })

	// With no deadline of the caller's, each request still has one.
	rec := &deadlineRecorder{next: f.srv.Client().Transport}
	c := f.client()
	c.HTTPClient = &http.Client{Transport: rec}
	if _, err := c.GetOrder(context.Background(), acct, f.url("/order/1")); err != nil {
		t.Fatal(err)
	}
	if len(rec.deadlines) != 3 { // directory, newNonce, order
		t.Fatalf("%d requests, want 3", len(rec.deadlines))
	}
	for i, left := range rec.deadlines {
		if left < DefaultRequestTimeout-5*time.Second || left > DefaultRequestTimeout {
			t.Errorf("request %d: time left %v, want about DefaultRequestTimeout (%v)", i, left, DefaultRequestTimeout)
		}
	}

	// A server that does not answer is given up on after RequestTimeout,
	// long before the caller's deadline.
	done := make(chan struct{})
	defer close(done)
	f.handle("/order/2", func(w http.ResponseWriter, req fakeRequest) {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	c = f.client()
	c.RequestTimeout = 100 * time.Millisecond
	c.MaxRetries = 1
	if _, err := c.Directory(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.GetOrder(ctxT(t), acct, f.url("/order/2"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("GetOrder from a silent server = %v after %v, want DeadlineExceeded after about 100ms", err, time.Since(start))
	}
}

// TestSafeRequestsRetried5xx: the directory GET and the newNonce HEAD are
// safe to repeat, so a 503 is retried.
func TestSafeRequestsRetried5xx(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.Method+" "+r.URL.Path]++
		n := hits[r.Method+" "+r.URL.Path]
		mu.Unlock()
		if n <= 2 {
			w.Header().Set("Retry-After", "0")
			writeProblem(w, 503, ProblemServerInternal, "busy")
			return
		}
		switch r.URL.Path {
		case "/dir":
			base := "https://" + r.Host
			writeJSON(w, 200, map[string]string{"newNonce": base + "/nonce", "newAccount": base + "/acct", "newOrder": base + "/order"})
		case "/nonce":
			w.Header().Set("Replay-Nonce", "fresh")
		}
	}))
	defer srv.Close()
	c := &Client{DirectoryURL: srv.URL + "/dir", HTTPClient: srv.Client()}
	n, err := c.nonce(ctxT(t))
	if err != nil || n != "fresh" {
		t.Fatalf("nonce = %q, %v, want fresh after retries", n, err)
	}
	if want := map[string]int{"GET /dir": 3, "HEAD /nonce": 3}; !maps.Equal(hits, want) {
		t.Errorf("requests = %v, want %v", hits, want)
	}
}

// TestRedirectToHTTPRefused: a redirect is a URL from the server like any
// other; a plain-http one is not followed.
func TestRedirectToHTTPRefused(t *testing.T) {
	var plain int
	insecure := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { plain++ }))
	defer insecure.Close()
	srv := httptest.NewTLSServer(http.RedirectHandler(insecure.URL+"/dir", http.StatusFound))
	defer srv.Close()
	c := &Client{DirectoryURL: srv.URL + "/dir", HTTPClient: srv.Client()}
	if _, err := c.Directory(ctxT(t)); !errors.Is(err, ErrInsecureURL) {
		t.Errorf("Directory redirected to http = %v, want ErrInsecureURL", err)
	}
	if plain != 0 {
		t.Errorf("the http server got %d requests, want 0", plain)
	}
}

func TestGetRenewalInfo(t *testing.T) {
	// The certificate of RFC 9773 §4.1's example (see TestARICertID).
	cert := &x509.Certificate{
		AuthorityKeyId: []byte{0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4},
		SerialNumber:   big.NewInt(0x87654321),
	}
	const certID = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
	f := newFakeCA(t)
	if _, err := f.client().GetRenewalInfo(ctxT(t), cert); !errors.Is(err, ErrNotSupported) {
		t.Errorf("GetRenewalInfo without renewalInfo in the directory = %v, want ErrNotSupported", err)
	}

	f = newFakeCA(t)
	f.dir["renewalInfo"] = f.url("/ari/")
	retryAt := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	f.handleGet("/ari/"+certID, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAt.Format(http.TimeFormat))
		writeJSON(w, 200, map[string]any{
			"suggestedWindow": map[string]string{"start": "2026-03-01T00:00:00Z", "end": "2026-03-03T00:00:00Z"},
			"explanationURL":  "https://ca.example/incident/42",
		})
	})
	ri, err := f.client().GetRenewalInfo(ctxT(t), cert)
	if err != nil {
		t.Fatal(err)
	}
	w := ri.SuggestedWindow
	if !w.Start.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) || !w.End.Equal(time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)) ||
		ri.ExplanationURL != "https://ca.example/incident/42" {
		t.Errorf("GetRenewalInfo = %+v, want the window 2026-03-01..03 and the explanation URL", ri)
	}
	if d := ri.RetryAfter - 2*time.Hour; d < -5*time.Second || d > 5*time.Second {
		t.Errorf("RetryAfter = %v, want about 2h (from an HTTP-date)", ri.RetryAfter)
	}

	// A malformed window is refused; the directory URL may lack the
	// final slash.
	f = newFakeCA(t)
	f.dir["renewalInfo"] = f.url("/ari")
	f.handleGet("/ari/"+certID, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"suggestedWindow": map[string]string{"start": "2026-03-03T00:00:00Z", "end": "2026-03-01T00:00:00Z"}})
	})
	if _, err := f.client().GetRenewalInfo(ctxT(t), cert); !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("GetRenewalInfo with an inverted window = %v, want ErrMalformedResponse", err)
	}
}

// TestFinalizeValidWithoutCertificate: a valid order must name its
// certificate, whether finalize answers valid at once or after a poll.
func TestFinalizeValidWithoutCertificate(t *testing.T) {
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(certKey, []Identifier{DNS("a.example")})
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{StatusValid, StatusProcessing} {
		t.Run(status, func(t *testing.T) {
			f := newFakeCA(t)
			acct := f.account()
			f.handle("/finalize/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, status)) })
			f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) { writeJSON(w, 200, orderJSON(f, StatusValid)) })
			_, err := f.client().FinalizeOrder(ctxT(t), acct, Order{URL: f.url("/order/1"), Finalize: f.url("/finalize/1")}, csr)
			if !errors.Is(err, ErrMalformedResponse) {
				t.Errorf("FinalizeOrder = %v, want ErrMalformedResponse", err)
			}
		})
	}
}

// TestFinalizeHonoursRetryAfter: the Retry-After of the finalize answer
// sets the first poll; one past the caller's deadline ends the wait at
// once, without polling.
func TestFinalizeHonoursRetryAfter(t *testing.T) {
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(certKey, []Identifier{DNS("a.example")})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/finalize/1", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 200, orderJSON(f, StatusProcessing))
	})
	f.handle("/order/1", func(w http.ResponseWriter, req fakeRequest) {
		o := orderJSON(f, StatusValid)
		o["certificate"] = f.url("/cert/1")
		writeJSON(w, 200, o)
	})
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	start := time.Now()
	o, err := f.client().FinalizeOrder(ctx, acct, Order{URL: f.url("/order/1"), Finalize: f.url("/finalize/1")}, csr)
	if !errors.Is(err, context.DeadlineExceeded) || o.Status != StatusProcessing || time.Since(start) > 2*time.Second {
		t.Errorf("FinalizeOrder = %q, %v after %v, want processing and DeadlineExceeded at once", o.Status, err, time.Since(start))
	}
	if n := len(f.posts("/order/1")); n != 0 {
		t.Errorf("polls = %d, want 0 (Retry-After: 30 is past the deadline)", n)
	}
}

// TestKeyChangeConflict: a 409 answer to keyChange (RFC 8555 §7.3.5) is
// an *AccountError naming the account that holds the key.
func TestKeyChangeConflict(t *testing.T) {
	f := newFakeCA(t)
	acct := f.account()
	f.handle("/keychange", func(w http.ResponseWriter, req fakeRequest) {
		w.Header().Set("Location", f.url("/acct/2"))
		writeProblem(w, http.StatusConflict, ProblemMalformed, "key in use")
	})
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := f.client().ChangeAccountKey(ctxT(t), acct, newKey)
	var ae *AccountError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAccountKeyConflict) || errors.Is(err, ErrAccountDoesNotExist) {
		t.Fatalf("ChangeAccountKey = %v, want an *AccountError matching ErrAccountKeyConflict", err)
	}
	want := "changing account key: acme: the new key already belongs to account " + f.url("/acct/2") + ": POST " + f.url("/keychange") + ": malformed (409): key in use"
	if ae.URL != acct.URL || ae.ConflictURL != f.url("/acct/2") || err.Error() != want {
		t.Errorf("ChangeAccountKey = %q (URL %s), want %q (URL %s)", err, ae.URL, want, acct.URL)
	}
}
