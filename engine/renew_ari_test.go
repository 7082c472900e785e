package engine

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/renewal"
)

// ariProxy alters Pebble's renewalInfo responses: a set retryAfter
// replaces their Retry-After, and while fail is set they are answered with
// a problem document instead (the CA is not asked).
type ariProxy struct {
	rt         http.RoundTripper
	retryAfter string
	fail       atomic.Bool
}

func (a *ariProxy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/draft-ietf-acme-ari-03/") {
		return a.rt.RoundTrip(r)
	}
	if a.fail.Load() {
		body := `{"type":"urn:ietf:params:acme:error:malformed","detail":"renewal information unavailable"}`
		return &http.Response{
			StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": {"application/problem+json"}},
			Body:    io.NopCloser(strings.NewReader(body)),
			Request: r, ContentLength: int64(len(body)),
		}, nil
	}
	resp, err := a.rt.RoundTrip(r)
	if err == nil && a.retryAfter != "" {
		resp.Header.Set("Retry-After", a.retryAfter)
	}
	return resp, err
}

// TestARIRetryAfterAndChosenTime: the CA's Retry-After (2h here, Pebble
// sends 6h) decides when renewal information is fetched again: after the
// first fetch (at renewal.FirstARIFetch), a run before the Retry-After
// asks nothing, a run after it fetches once; the window is unchanged, so
// the time chosen in it stays put.
func TestARIRetryAfterAndChosenTime(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"ra\"\ndomains = [\"ra.example.com\"]\nsolver = \"webroot\"\nprofile = \"default\"\n")
	o := Options{HTTPClient: &http.Client{Transport: &ariProxy{rt: pebble.HTTPClient().Transport, retryAfter: "7200"}}}
	if r := e.runWith(cfg, o, RunOptions{})["ra"]; r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	v := e.current(cfg, "ra")
	start := renewal.FirstARIFetch(v.Info.NotBefore, v.Info.NotAfter)
	e.now = func() time.Time { return start }
	pebble.Counter().Reset()
	if r := e.runWith(cfg, o, RunOptions{})["ra"]; r.Action != ActionNone || r.Err != nil {
		t.Fatalf("run at the first fetch = %s %v, want nothing to do", r.Action, r.Err)
	}
	if n := ariFetches(pebble); n != 1 {
		t.Errorf("renewalInfo requests at the first fetch = %d, want 1", n)
	}
	first := e.meta(cfg, "ra").Renewal
	if !first.ARINextFetch.Equal(start.Add(2 * time.Hour)) {
		t.Errorf("next ARI fetch = %s, want %s (the 2h Retry-After)", first.ARINextFetch, start.Add(2*time.Hour))
	}
	if first.ARIChosen.Before(start.Add(24 * time.Hour)) {
		t.Fatalf("chosen time %s is too close for this test (window %s)", first.ARIChosen, first.ARIWindow)
	}
	steps := []struct {
		after   time.Duration
		fetches int
	}{
		{time.Hour, 0},
		{2*time.Hour + time.Minute, 1},
		{3 * time.Hour, 0},
	}
	for _, s := range steps {
		at := start.Add(s.after)
		e.now = func() time.Time { return at }
		pebble.Counter().Reset()
		if r := e.runWith(cfg, o, RunOptions{})["ra"]; r.Action != ActionNone || r.Err != nil {
			t.Fatalf("run at +%s = %s %v, want nothing to do", s.after, r.Action, r.Err)
		}
		if n := ariFetches(pebble); n != s.fetches {
			t.Errorf("run at +%s: renewalInfo requests = %d, want %d", s.after, n, s.fetches)
		}
		st := e.meta(cfg, "ra").Renewal
		if !st.ARIChosen.Equal(first.ARIChosen) || !st.ARIWindow.Equal(first.ARIWindow) {
			t.Errorf("run at +%s: window %s chosen %s, want %s chosen %s (kept)", s.after, st.ARIWindow, st.ARIChosen, first.ARIWindow, first.ARIChosen)
		}
	}
}

// TestARIFailureDoesNotBlock: when the renewalInfo request fails, the
// certificate is still renewed by the lifetime rule (2/3 of it), and the
// failure is recorded for explain.
func TestARIFailureDoesNotBlock(t *testing.T) {
	e := newEnv(t)
	cfg := e.write("[[certificate]]\nname = \"arifail\"\ndomains = [\"arifail.example.com\"]\nsolver = \"webroot\"\n")
	proxy := &ariProxy{rt: pebble.HTTPClient().Transport}
	proxy.fail.Store(true)
	o := Options{HTTPClient: &http.Client{Transport: proxy}}
	if r := e.runWith(cfg, o, RunOptions{})["arifail"]; r.Action != ActionIssued || r.Err != nil {
		t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
	}
	v := e.current(cfg, "arifail")
	fetch := renewal.FirstARIFetch(v.Info.NotBefore, v.Info.NotAfter)
	e.now = func() time.Time { return fetch }
	if r := e.runWith(cfg, o, RunOptions{})["arifail"]; r.Action != ActionNone || r.Err != nil {
		t.Fatalf("run at the first ARI fetch = %s %v, want nothing to do", r.Action, r.Err)
	}
	if st := e.meta(cfg, "arifail").Renewal; !st.ARIWindow.IsZero() || !strings.Contains(st.ARIError, "renewal information unavailable") {
		t.Fatalf("renewal state = %+v, want no window and the ARI error", st)
	}
	life := v.Info.NotAfter.Sub(v.Info.NotBefore) + time.Second
	due := v.Info.NotBefore.Add(life / 3 * 2)
	if life < 10*24*time.Hour {
		due = v.Info.NotBefore.Add(life / 2)
	}
	at := due.Add(time.Minute)
	e.now = func() time.Time { return at }
	r := e.runWith(cfg, o, RunOptions{})["arifail"]
	if r.Action != ActionRenewed || r.Err != nil || !strings.Contains(r.Reason, " of ") || !strings.Contains(r.Reason, "lifetime") {
		t.Errorf("run past the lifetime rule with ARI failing = %s %q %v, want renewed by the lifetime rule", r.Action, r.Reason, r.Err)
	}
}

// orderProxy refuses newOrder requests with a problem of type problem:
// those naming a certificate in replaces, or every one when all is set.
// It records, for each newOrder request, whether it had replaces.
type orderProxy struct {
	rt       http.RoundTripper
	problem  string
	all      bool
	mu       sync.Mutex
	replaces []bool
}

func (p *orderProxy) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/order-plz") {
		return p.rt.RoundTrip(r)
	}
	payload, err := jwsPayload(r)
	if err != nil {
		return nil, err
	}
	has := bytes.Contains(payload, []byte(`"replaces"`))
	p.mu.Lock()
	p.replaces = append(p.replaces, has)
	p.mu.Unlock()
	if !has && !p.all {
		return p.rt.RoundTrip(r)
	}
	body := `{"type":"` + p.problem + `","detail":"refused by the test"}`
	return &http.Response{
		StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/problem+json"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: r, ContentLength: int64(len(body)),
	}, nil
}

// TestReplacesRefused: a renewal names the replaced certificate; a CA
// that refuses that gets the order once more without replaces, and never
// a third time; a rateLimited refusal is not retried.
func TestReplacesRefused(t *testing.T) {
	tests := []struct {
		name    string
		problem string
		all     bool
		want    Action
		orders  []bool // replaces sent, per newOrder request
	}{
		{"malformed replaces", acme.ProblemMalformed, false, ActionRenewed, []bool{true, false}},
		{"alreadyReplaced", acme.ProblemAlreadyReplaced, false, ActionRenewed, []bool{true, false}},
		{"every order refused", acme.ProblemMalformed, true, ActionFailed, []bool{true, false}},
		{"rate limited", acme.ProblemRateLimited, true, ActionFailed, []bool{true}},
	}
	e := newEnv(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("rr%d", i)
			cfg := e.write(fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [\"%s.example.com\"]\nsolver = \"webroot\"\n", name, name))
			if r := e.run(cfg, RunOptions{})[name]; r.Action != ActionIssued || r.Err != nil {
				t.Fatalf("first run = %s %v, want issued", r.Action, r.Err)
			}
			proxy := &orderProxy{rt: pebble.HTTPClient().Transport, problem: tt.problem, all: tt.all}
			r := e.runWith(cfg, Options{HTTPClient: &http.Client{Transport: proxy}}, RunOptions{Force: true})[name]
			if r.Action != tt.want {
				t.Errorf("forced renewal = %s %v, want %s", r.Action, r.Err, tt.want)
			}
			if !slices.Equal(proxy.replaces, tt.orders) {
				t.Errorf("newOrder requests with replaces = %v, want %v", proxy.replaces, tt.orders)
			}
			if p := problemOf(r.Err); tt.want == ActionFailed && (p == nil || p.Type != tt.problem) {
				t.Errorf("error = %v, want the CA's %s", r.Err, tt.problem)
			}
		})
	}
}
