package acme

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors of the transport.
var (
	// ErrInsecureURL is returned for a URL that is not https (from the
	// caller, the directory, or a Location or Link header) unless
	// Client.AllowInsecureHTTP is set.
	ErrInsecureURL = errors.New("acme: URL is not https")
	// ErrMalformedResponse is returned when a server response cannot be
	// decoded.
	ErrMalformedResponse = errors.New("acme: malformed response")
	// ErrResponseTooLarge is returned when a response body exceeds the
	// size cap.
	ErrResponseTooLarge = errors.New("acme: response body too large")
	// ErrNoNonce is returned when the server sends no Replay-Nonce from
	// newNonce.
	ErrNoNonce = errors.New("acme: server sent no Replay-Nonce")
)

const (
	// maxBodySize caps every response body (certificate chains included).
	maxBodySize = 1 << 20
	// maxNonces caps the nonce pool.
	maxNonces = 32
	// DefaultRequestTimeout bounds each HTTP request unless
	// Client.RequestTimeout says otherwise; the caller's context bounds
	// the whole operation.
	DefaultRequestTimeout = 30 * time.Second
	// DefaultMaxRetries bounds the badNonce retries of one request.
	DefaultMaxRetries = 10
	// max5xxRetries bounds the 5xx retries of one safe request (fewer if
	// Client.MaxRetries is lower).
	max5xxRetries = 3
	// maxRetryWait is the longest Retry-After the transport sleeps
	// through on its own; longer ones are returned to the caller.
	maxRetryWait = 10 * time.Second
)

// response is a server reply with its body read.
type response struct {
	status     int
	header     http.Header
	body       []byte
	location   string
	retryAfter time.Duration
	links      map[string][]string
}

// signer is the identity a POST is signed with: an account (kid) or a bare
// key (jwk).
type signer struct {
	key crypto.Signer
	kid string
}

func accountSigner(acct Account) (signer, error) {
	if acct.Key == nil || acct.URL == "" {
		return signer{}, ErrNoAccount
	}
	return signer{key: acct.Key, kid: acct.URL}, nil
}

// checkURL enforces https (RFC 8555 §6.1) unless the client allows http.
func (c *Client) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInsecureURL, raw, err)
	}
	if u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && c.AllowInsecureHTTP)) {
		return fmt.Errorf("%w: %q", ErrInsecureURL, raw)
	}
	return nil
}

// discardLogger is what a Client without a Logger logs to. It holds no
// state, so sharing it between clients is safe.
var discardLogger = slog.New(slog.DiscardHandler)

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return discardLogger
	}
	return c.Logger
}

func (c *Client) maxRetries() int {
	if c.MaxRetries > 0 {
		return c.MaxRetries
	}
	return DefaultMaxRetries
}

// httpClient returns the caller's client with redirects to non-https URLs
// refused.
func (c *Client) httpClient() *http.Client {
	c.initOnce.Do(func() {
		hc := http.DefaultClient
		if c.HTTPClient != nil {
			hc = c.HTTPClient
		}
		cp := *hc
		prev := cp.CheckRedirect
		cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if err := c.checkURL(req.URL.String()); err != nil {
				return err
			}
			if prev != nil {
				return prev(req, via)
			}
			if len(via) >= 5 {
				return errors.New("acme: too many redirects")
			}
			return nil
		}
		c.hc = &cp
	})
	return c.hc
}

// send performs one HTTP request under its own timeout and reads the
// capped body. Any Replay-Nonce goes into the pool.
func (c *Client) send(ctx context.Context, method, u string, body []byte, accept string) (*response, error) {
	if err := c.checkURL(u); err != nil {
		return nil, err
	}
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("creating request %s %s: %w", method, u, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/jose+json")
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	ua := "acmehook-acme"
	if c.UserAgent != "" {
		ua = c.UserAgent + " " + ua
	}
	req.Header.Set("User-Agent", ua)
	start := time.Now()
	resp, err := c.httpClient().Do(req)
	if err != nil {
		// net/http's *url.Error says the method and URL again.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading response of %s %s: %w", method, u, err)
	}
	if len(data) > maxBodySize {
		return nil, fmt.Errorf("%s %s: %w (over %d bytes)", method, u, ErrResponseTooLarge, maxBodySize)
	}
	c.logger().Debug("acme request", "method", method, "url", u, "status", resp.StatusCode, "duration", time.Since(start))
	// A HEAD is newNonce: its caller takes the nonce itself.
	if n := resp.Header.Get("Replay-Nonce"); n != "" && method != http.MethodHead {
		c.putNonce(n)
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: data}
	r.retryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if loc := resp.Header.Get("Location"); loc != "" {
		abs, err := resolveRef(u, loc)
		if err != nil {
			return nil, err
		}
		if err := c.checkURL(abs); err != nil {
			return nil, fmt.Errorf("checking the Location header of %s: %w", u, err)
		}
		r.location = abs
	}
	r.links = parseLinks(u, resp.Header.Values("Link"))
	if resp.StatusCode >= 400 {
		return r, c.problem(r, method, u)
	}
	return r, nil
}

// problem turns an error response into a *Problem.
func (c *Client) problem(r *response, method, u string) *Problem {
	p := &Problem{}
	ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	if ct == "application/problem+json" || ct == "application/json" {
		if json.Unmarshal(r.body, p) != nil {
			p = &Problem{}
		}
	}
	if p.Status == 0 {
		p.Status = r.status
	}
	if p.Type == "" && p.Detail == "" {
		p.Detail = http.StatusText(r.status)
		if ct == "text/plain" && len(r.body) > 0 && len(r.body) < 512 {
			p.Detail = strings.TrimSpace(string(r.body))
		}
	}
	p.fillAlgorithms()
	p.RetryAfter = r.retryAfter
	p.Method, p.URL = method, u
	return p
}

// get performs an unauthenticated GET (directory, renewalInfo), retrying
// 5xx answers.
func (c *Client) get(ctx context.Context, u string) (*response, error) {
	for attempt := 0; ; attempt++ {
		r, err := c.send(ctx, http.MethodGet, u, nil, "")
		if !c.shouldRetry5xx(ctx, r, err, attempt) {
			return r, err
		}
	}
}

// shouldRetry5xx sleeps and reports true when a safe request got a 5xx
// that is worth retrying.
func (c *Client) shouldRetry5xx(ctx context.Context, r *response, err error, attempt int) bool {
	if err == nil || r == nil || r.status < 500 || attempt >= min(c.maxRetries(), max5xxRetries) {
		return false
	}
	wait := r.retryAfter
	if wait == 0 {
		wait = time.Duration(100<<attempt) * time.Millisecond
	}
	if wait > maxRetryWait {
		return false
	}
	return sleep(ctx, wait) == nil
}

// post sends a JWS-signed POST (RFC 8555 §6.2). payload nil is POST-as-GET
// (§6.3), which is safe to repeat, so 5xx answers are retried for it.
// badNonce answers are retried with a fresh nonce and a fresh signature
// (§6.5), up to the retry bound. With transient (newAccount, newOrder,
// finalize, the challenge POST) a 429 or 5xx answer is retried too, with
// a fresh nonce, after its Retry-After or a short jittered backoff, while
// that fits the transient retry budget and the caller's deadline (see
// MaxTransientRetries); otherwise the problem is returned with its
// RetryAfter.
func (c *Client) post(ctx context.Context, s signer, u string, payload any, accept string, transient bool) (*response, error) {
	var body []byte
	if payload != nil {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			return nil, fmt.Errorf("encoding request to %s: %w", u, err)
		}
	}
	var budget transientBudget
	for attempt := 0; ; attempt++ {
		nonce, err := c.nonce(ctx)
		if err != nil {
			return nil, err
		}
		jws, err := signJWS(s.key, s.kid, nonce, u, body)
		if err != nil {
			c.releaseNonce()
			return nil, err
		}
		r, err := c.send(ctx, http.MethodPost, u, jws, accept)
		c.releaseNonce()
		var p *Problem
		if errors.As(err, &p) && p.Type == ProblemBadNonce && attempt < c.maxRetries() {
			c.logger().Debug("acme nonce rejected, retrying", "url", u, "attempt", attempt+1)
			continue
		}
		if payload == nil && c.shouldRetry5xx(ctx, r, err, attempt) {
			continue
		}
		if transient && p != nil && budget.retry(ctx, c, p) {
			continue
		}
		if p != nil && p.Type == ProblemAccountDoesNotExist {
			return r, &AccountError{URL: s.kid, Problem: p}
		}
		return r, err
	}
}

// The transient retry budget of one request (newAccount, newOrder,
// finalize, the challenge POST): a 429 or 5xx answer is retried at most
// MaxTransientRetries times, waiting its Retry-After or, without one,
// transientBackoff doubling with ±50% jitter, for at most
// TransientRetryBudget in all, and never past the caller's deadline. A
// refusal that does not fit is returned to the caller with its
// RetryAfter.
const (
	MaxTransientRetries  = 3
	TransientRetryBudget = 60 * time.Second
	transientBackoff     = 500 * time.Millisecond
)

// transientBudget is what one request has spent of its transient retries.
type transientBudget struct {
	retries int
	waited  time.Duration
}

// retry sleeps and reports true when p is a transient refusal (429, 5xx)
// whose wait fits the budget and ctx.
func (b *transientBudget) retry(ctx context.Context, c *Client, p *Problem) bool {
	if p.Status != http.StatusTooManyRequests && p.Status < 500 || b.retries >= MaxTransientRetries {
		return false
	}
	wait := p.RetryAfter
	if wait == 0 {
		d := transientBackoff << b.retries
		if c.transientBackoff > 0 {
			d = c.transientBackoff << b.retries
		}
		wait = d/2 + rand.N(d) // [d/2, 3d/2)
	}
	if b.waited+wait > TransientRetryBudget {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
		return false
	}
	c.logger().Info("acme server refused the request, retrying", "url", p.URL, "status", p.Status, "type", p.Type, "wait", wait, "retry", b.retries+1)
	if sleep(ctx, wait) != nil {
		return false
	}
	b.retries++
	b.waited += wait
	return true
}

// postJSON posts and decodes the JSON answer into v.
// transient is as for post.
func (c *Client) postJSON(ctx context.Context, s signer, u string, payload, v any, transient bool) (*response, error) {
	r, err := c.post(ctx, s, u, payload, "", transient)
	if err != nil {
		return r, err
	}
	if v != nil {
		if err := decode(r.body, v); err != nil {
			return r, fmt.Errorf("decoding response of %s: %w", u, err)
		}
	}
	return r, nil
}

// nonceGrace is how long a request that finds the nonce pool empty waits
// for the nonce of a response in flight before it may ask newNonce itself
// (still one newNonce at a time).
const nonceGrace = time.Second

// nonce takes a nonce from the pool (RFC 8555 §7.2), single-flight: when
// the pool is empty it waits for the nonce of a response in flight or of
// the one newNonce request the client sends at a time, and asks newNonce
// itself only when fewer requests that will bring a nonce are in flight
// than the caller has Streams (none, without Streams), or it has waited
// nonceGrace. A nonce handed out counts as in flight until the caller's
// release.
func (c *Client) nonce(ctx context.Context) (string, error) {
	// The directory first (cached after the first call): a server that
	// sends a Replay-Nonce with it saves the HEAD below.
	dir, err := c.Directory(ctx)
	if err != nil {
		return "", err
	}
	grace := nonceGrace
	if c.nonceWait > 0 {
		grace = c.nonceWait
	}
	var waitStart time.Time
	c.mu.Lock()
	for {
		if n := len(c.nonces); n > 0 {
			nonce := c.nonces[n-1]
			c.nonces = c.nonces[:n-1]
			c.nonceHolders++
			c.mu.Unlock()
			return nonce, nil
		}
		var waited time.Duration
		if !waitStart.IsZero() {
			waited = time.Since(waitStart)
		}
		if !c.nonceFetching && (c.nonceHolders < c.streams() || waited >= grace) {
			c.nonceFetching = true
			c.mu.Unlock()
			n, err := c.fetchNonce(ctx, dir.NewNonce)
			c.mu.Lock()
			c.nonceFetching = false
			if err == nil {
				c.nonceHolders++
			}
			c.nonceSignalLocked()
			c.mu.Unlock()
			return n, err
		}
		if waitStart.IsZero() {
			waitStart = time.Now()
		}
		if c.nonceReady == nil {
			c.nonceReady = make(chan struct{})
		}
		ready := c.nonceReady
		c.mu.Unlock()
		var graceOver <-chan time.Time
		var t *time.Timer
		if waited < grace {
			t = time.NewTimer(grace - waited)
			graceOver = t.C
		}
		select {
		case <-ready:
		case <-graceOver:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("waiting for a nonce: %w", err)
		}
		c.mu.Lock()
	}
}

// streams is how many nonces the pool grows to while they are in flight:
// the caller's Streams, at least one.
func (c *Client) streams() int {
	if c.Streams == nil {
		return 1
	}
	return max(c.Streams(), 1)
}

// releaseNonce ends the flight of a nonce handed out by nonce: its request
// got its answer (whose Replay-Nonce, if any, is already in the pool) or
// was never sent.
func (c *Client) releaseNonce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nonceHolders--
	c.nonceSignalLocked()
}

// nonceSignalLocked wakes the requests waiting for a nonce. c.mu is held.
func (c *Client) nonceSignalLocked() {
	if c.nonceReady != nil {
		close(c.nonceReady)
		c.nonceReady = nil
	}
}

// fetchNonce asks newNonce (HEAD), retrying 5xx answers.
func (c *Client) fetchNonce(ctx context.Context, u string) (string, error) {
	for attempt := 0; ; attempt++ {
		r, err := c.send(ctx, http.MethodHead, u, nil, "")
		if c.shouldRetry5xx(ctx, r, err, attempt) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("getting a nonce: %w", err)
		}
		n := r.header.Get("Replay-Nonce")
		if n == "" {
			return "", ErrNoNonce
		}
		return n, nil
	}
}

func (c *Client) putNonce(n string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.nonces) >= maxNonces {
		c.nonces = c.nonces[1:]
	}
	c.nonces = append(c.nonces, n)
	c.nonceSignalLocked()
}

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3),
// either delay-seconds or an HTTP-date, into a delay from now. An empty
// value is zero with no error; a date in the past is zero.
func ParseRetryAfter(v string, now time.Time) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("acme: bad Retry-After %q", v)
	}
	if d := t.Sub(now); d > 0 {
		return d.Round(time.Second), nil
	}
	return 0, nil
}

// resolveRef resolves a header URL against the request URL.
func resolveRef(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("%w: %q", ErrMalformedResponse, base)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("%w: bad URL %q: %w", ErrMalformedResponse, ref, err)
	}
	return b.ResolveReference(r).String(), nil
}

// parseLinks parses Link headers (RFC 8288) into rel -> URLs, resolved
// against base. Malformed entries are skipped.
func parseLinks(base string, values []string) map[string][]string {
	var links map[string][]string
	for _, v := range values {
		for _, part := range splitLinks(v) {
			part = strings.TrimSpace(part)
			if !strings.HasPrefix(part, "<") {
				continue
			}
			end := strings.IndexByte(part, '>')
			if end < 0 {
				continue
			}
			target := part[1:end]
			for _, param := range strings.Split(part[end+1:], ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(param), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "rel") {
					continue
				}
				abs, err := resolveRef(base, target)
				if err != nil {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
					if links == nil {
						links = map[string][]string{}
					}
					links[rel] = append(links[rel], abs)
				}
			}
		}
	}
	return links
}

// splitLinks splits a Link header value at commas outside <...> and quotes.
func splitLinks(v string) []string {
	var parts []string
	inURL, inQuote, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '<':
			inURL = true
		case '>':
			inURL = false
		case '"':
			inQuote = !inQuote
		case ',':
			if !inURL && !inQuote {
				parts = append(parts, v[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, v[start:])
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
