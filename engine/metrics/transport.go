package metrics

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names of acmehook_acme_requests_total besides the directory's
// own keys (newNonce, newAccount, newOrder, revokeCert, keyChange,
// renewalInfo ...).
const (
	EndpointDirectory   = "directory"
	EndpointAccount     = "account"
	EndpointOrder       = "order"
	EndpointAuthz       = "authz"
	EndpointChallenge   = "challenge"
	EndpointFinalize    = "finalize"
	EndpointCertificate = "certificate"
	EndpointOther       = "other"
)

// maxLearned bounds the URLs the transport remembers (orders,
// authorizations, challenges); past it they are forgotten and learnt
// again from the next responses.
const maxLearned = 10000

// maxPeek bounds how much of a response body the transport reads to learn
// URLs or a problem's type; the body is handed on whole.
const maxPeek = 1 << 20

// Transport implements Recorder: the returned RoundTripper counts and
// times every request to the CA by endpoint and status, and counts the
// problem documents by type. The endpoint of a URL is learnt from the
// responses, as a client follows them: the directory names newNonce,
// newOrder and the rest; a new account's or order's Location is its
// account or order; an order names its authorizations, finalize and
// certificate URLs; an authorization names its challenges.
func (m *Metrics) Transport(next http.RoundTripper, directoryURL string) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{m: m, next: next, dir: directoryURL, urls: map[string]string{}}
}

type transport struct {
	m    *Metrics
	next http.RoundTripper
	dir  string

	mu      sync.Mutex
	fromDir map[string]string // directory URLs -> key
	ariURL  string
	urls    map[string]string // learnt from responses
}

func (t *transport) endpoint(u string) string {
	if u == t.dir {
		return EndpointDirectory
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.fromDir[u]; ok {
		return e
	}
	if t.ariURL != "" && strings.HasPrefix(u, strings.TrimSuffix(t.ariURL, "/")+"/") {
		return "renewalInfo"
	}
	if e, ok := t.urls[u]; ok {
		return e
	}
	return EndpointOther
}

func (t *transport) learn(u, endpoint string) {
	if u == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.urls) >= maxLearned {
		clear(t.urls)
	}
	t.urls[u] = endpoint
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ep := t.endpoint(req.URL.String())
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	t.m.acmeDuration.WithLabelValues(ep).Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.acmeRequests.WithLabelValues(ep, "error").Inc()
		return resp, err
	}
	t.m.acmeRequests.WithLabelValues(ep, strconv.Itoa(resp.StatusCode)).Inc()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct == "application/problem+json" {
		var p struct {
			Type string `json:"type"`
		}
		json.Unmarshal(peek(resp), &p) // a body that is no problem counts as "other"
		t.m.problem(p.Type)
		return resp, nil
	}
	if resp.StatusCode >= 300 {
		return resp, nil
	}
	loc := resp.Header.Get("Location")
	if loc != "" {
		if l, err := req.URL.Parse(loc); err == nil {
			loc = l.String()
		}
	}
	switch ep {
	case EndpointDirectory:
		t.learnDirectory(peek(resp))
	case "newAccount":
		t.learn(loc, EndpointAccount)
	case "newOrder", EndpointOrder, EndpointFinalize:
		t.learn(loc, EndpointOrder)
		var o struct {
			Authorizations []string `json:"authorizations"`
			Finalize       string   `json:"finalize"`
			Certificate    string   `json:"certificate"`
		}
		if json.Unmarshal(peek(resp), &o) == nil {
			for _, a := range o.Authorizations {
				t.learn(a, EndpointAuthz)
			}
			t.learn(o.Finalize, EndpointFinalize)
			t.learn(o.Certificate, EndpointCertificate)
		}
	case EndpointAuthz:
		var a struct {
			Challenges []struct {
				URL string `json:"url"`
			} `json:"challenges"`
		}
		if json.Unmarshal(peek(resp), &a) == nil {
			for _, c := range a.Challenges {
				t.learn(c.URL, EndpointChallenge)
			}
		}
	case EndpointCertificate:
		// Alternate chains (RFC 8555 §7.4.2) are certificates too.
		for _, l := range resp.Header.Values("Link") {
			if u, ok := alternate(l); ok {
				if a, err := req.URL.Parse(u); err == nil {
					t.learn(a.String(), EndpointCertificate)
				}
			}
		}
	}
	return resp, nil
}

func (t *transport) learnDirectory(body []byte) {
	var d map[string]any
	if json.Unmarshal(body, &d) != nil {
		return
	}
	from := map[string]string{}
	ari := ""
	for k, v := range d {
		u, ok := v.(string)
		if !ok || k == "meta" {
			continue
		}
		if k == "renewalInfo" {
			ari = u
		}
		from[u] = k
	}
	t.mu.Lock()
	t.fromDir, t.ariURL = from, ari
	t.mu.Unlock()
}

// peek reads up to maxPeek bytes of resp's body and puts them back in
// front of the rest.
func peek(resp *http.Response) []byte {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPeek))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), errReader{err}, resp.Body), resp.Body}
	if err != nil {
		return nil
	}
	return b
}

// errReader hands on the error peek met, so the client sees it.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	return 0, io.EOF
}

// alternate returns the URL of a Link header value with rel="alternate".
func alternate(link string) (string, bool) {
	for part := range strings.SplitSeq(link, ",") {
		u, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.HasPrefix(u, "<") || !strings.HasSuffix(u, ">") {
			continue
		}
		for p := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "alternate" {
				return u[1 : len(u)-1], true
			}
		}
	}
	return "", false
}
