package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// ErrNoAccount is returned when a method needs an account with a key and a
// URL and gets one without.
var ErrNoAccount = errors.New("acme: account has no key or no URL")

// ErrNotSupported is returned when the directory lacks the resource an
// operation needs (newAuthz, renewalInfo).
var ErrNotSupported = errors.New("acme: not supported by the server")

// Client talks to one ACME server (RFC 8555). Set the exported fields and
// use it; the zero values are sensible defaults except DirectoryURL. A
// Client does no network I/O until a method is called, fetches the
// directory once and caches it, and is safe for concurrent use. Do not
// change its fields after first use.
//
//	c := &acme.Client{DirectoryURL: u, HTTPClient: hc, Logger: log}
type Client struct {
	// DirectoryURL is the server's directory, https.
	DirectoryURL string
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives Debug records of each request and of the solve
	// flow's steps, and a Warn record for a failed Solver.CleanUp; nil
	// discards.
	Logger *slog.Logger
	// UserAgent is prepended to the User-Agent header.
	UserAgent string
	// AllowInsecureHTTP lets the client follow http URLs. For tests
	// against local servers only; RFC 8555 §6.1 requires https.
	AllowInsecureHTTP bool
	// RequestTimeout bounds each HTTP request within the caller's
	// context; zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxRetries bounds the retries of one request after badNonce (and,
	// up to 3, after a 5xx); zero means DefaultMaxRetries.
	MaxRetries int
	// PollInterval is the first wait when polling an order or an
	// authorization that is still pending or processing; it doubles up
	// to MaxPollInterval. A Retry-After from the server takes precedence.
	// Zero means DefaultPollInterval.
	PollInterval time.Duration
	// MaxPollInterval caps the polling backoff; zero means
	// DefaultMaxPollInterval.
	MaxPollInterval time.Duration
	// PollTimeout bounds each wait for an order or an authorization
	// (WaitOrder, WaitAuthorization, FinalizeOrder's polling); the
	// caller's context may end it sooner. Zero means DefaultPollTimeout.
	PollTimeout time.Duration
	// Streams, when set, returns how many independent sequences of
	// requests the caller has under way (the certificates it works on at
	// once, say). Each request needs a nonce (RFC 8555 §6.5), and answers
	// bring the next ones; while fewer nonces than that are in flight, a
	// request that finds the pool empty asks newNonce (still one at a
	// time) instead of waiting for an answer, so the pool grows until the
	// sequences no longer wait for each other's nonces. Requests fanned
	// out within one sequence (an order's authorizations) still wait for
	// the nonces their answers bring. Nil counts one sequence: the fewest
	// newNonce requests, but concurrent requests then go one after the
	// other.
	Streams func() int

	// transientBackoff replaces the first transient retry backoff (tests).
	transientBackoff time.Duration
	// nonceWait replaces nonceGrace (tests).
	nonceWait time.Duration

	initOnce sync.Once
	hc       *http.Client

	// mu guards the nonce pool and its single-flight state (see nonce).
	mu            sync.Mutex
	nonces        []string
	nonceHolders  int           // nonces handed out whose request has not been answered
	nonceFetching bool          // a newNonce request is in flight
	nonceReady    chan struct{} // closed when a nonce arrives or a flight ends
	dirMu         sync.Mutex
	dir           *Directory
}

// Polling defaults. A CA that validates or issues in a few milliseconds
// (Pebble, a local step-ca) is found done at the first poll, 50 ms after
// the request; one that takes seconds (Let's Encrypt) is polled at 50,
// 150, 350, 750, 1550 ms..., about as often as a 75 ms start would
// (log2 1.5 ≈ 0.6 poll more at most). A Retry-After from the server
// always takes precedence.
const (
	DefaultPollInterval    = 50 * time.Millisecond
	DefaultMaxPollInterval = 3 * time.Second
)

// Directory returns the server's directory (RFC 8555 §7.1.1), fetching it
// on the first call and caching it. Every URL in it must be https unless
// AllowInsecureHTTP is set.
func (c *Client) Directory(ctx context.Context) (Directory, error) {
	return c.directory(ctx, false)
}

// RefreshDirectory fetches the directory again and caches it in place of
// the one Directory fetched first, for a long-lived client that looks at
// the server's terms of service (RFC 8555 §7.3.3) or its resources anew.
// When the fetch fails the cached directory stays.
func (c *Client) RefreshDirectory(ctx context.Context) (Directory, error) {
	return c.directory(ctx, true)
}

func (c *Client) directory(ctx context.Context, fresh bool) (Directory, error) {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if c.dir != nil && !fresh {
		return *c.dir, nil
	}
	if c.DirectoryURL == "" {
		return Directory{}, errors.New("acme: client has no DirectoryURL")
	}
	r, err := c.get(ctx, c.DirectoryURL)
	if err != nil {
		return Directory{}, fmt.Errorf("fetching directory: %w", err)
	}
	var d Directory
	if err := decode(r.body, &d); err != nil {
		return Directory{}, fmt.Errorf("decoding directory: %w", err)
	}
	for name, u := range map[string]string{"newNonce": d.NewNonce, "newAccount": d.NewAccount, "newOrder": d.NewOrder} {
		if u == "" {
			return Directory{}, fmt.Errorf("decoding directory: %w: no %s URL", ErrMalformedResponse, name)
		}
	}
	for _, u := range []string{d.NewNonce, d.NewAccount, d.NewOrder, d.NewAuthz, d.RevokeCert, d.KeyChange, d.RenewalInfo} {
		if u == "" {
			continue
		}
		if err := c.checkURL(u); err != nil {
			return Directory{}, fmt.Errorf("decoding directory: %w", err)
		}
	}
	d.URL = c.DirectoryURL
	c.dir = &d
	return d, nil
}
