// Package pebbletest runs Let's Encrypt's Pebble ACME test server and a
// challtestsrv DNS server in-process, on loopback ports chosen at random, for
// the tests of every acmehook package.
//
// Each Server has its own validation ports (HTTPPort, TLSPort), so packages
// tested in parallel by "go test ./..." never validate against each other's
// solvers. Every name resolves to 127.0.0.1 through the Server's DNS unless a
// test says otherwise.
package pebbletest

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Profile is a certificate profile offered by the test CA.
type Profile struct {
	Description string
	Validity    time.Duration
}

// Options configure one Pebble. The zero value is a deterministic CA: no
// validation sleeps, no rejected nonces, no authorization reuse.
type Options struct {
	// EABKeys maps EAB key IDs to base64url HMAC keys.
	EABKeys     map[string]string
	EABRequired bool
	// Strict turns on Pebble's RFC-strict mode.
	Strict bool
	// AlternateRoots and ChainLength shape the issued chains.
	AlternateRoots int
	ChainLength    int
	// Profiles offered in the directory; nil means "default" (90 days) and
	// "shortlived" (6 days).
	Profiles map[string]Profile
	// RetryAfterAuthz and RetryAfterOrder are the Retry-After seconds Pebble
	// sends while an authorization or order is processing.
	RetryAfterAuthz, RetryAfterOrder int
	// NonceRejectPercent is PEBBLE_WFE_NONCEREJECT.
	NonceRejectPercent int
	// AuthzReusePercent is PEBBLE_AUTHZREUSE.
	AuthzReusePercent int
	// AlwaysValid skips real validation (PEBBLE_VA_ALWAYS_VALID).
	AlwaysValid bool
	// Logs sends Pebble's own log to the test log instead of discarding it.
	Logs bool
}

// Server is a running Pebble with its DNS server.
type Server struct {
	// DirectoryURL is the ACME directory, https on 127.0.0.1.
	DirectoryURL string
	// ManagementURL is the base of Pebble's management API.
	ManagementURL string
	// CACertPEM is the certificate the ACME API is served with; clients
	// must trust it. CAFile is the same PEM written to a file.
	CACertPEM []byte
	CAFile    string
	// HTTPPort and TLSPort are where Pebble's VA connects on 127.0.0.1 for
	// http-01 and tls-alpn-01.
	HTTPPort, TLSPort int
	// DNSAddr is the challtestsrv DNS server (UDP and TCP) Pebble resolves
	// through, shared by every Server of the process; DNSManagementURL speaks pebble-challtestsrv's management API
	// (/set-txt, /clear-txt, /set-cname, /clear-cname).
	DNSAddr          string
	DNSManagementURL string
	// DNS gives direct access to the DNS records.
	DNS *challtestsrv.ChallSrv

	api, mgmt, dnsMgmt *httptest.Server
	counter            *Counter
}

var envMu sync.Mutex

// Start runs a Pebble for the test and stops it at the test's cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New runs a Pebble until Close; for TestMain, where there is no testing.TB.
func New(opts Options) (*Server, error) {
	logger := log.New(io.Discard, "", 0)
	if opts.Logs {
		logger = log.New(os.Stderr, "pebble ", log.Lmicroseconds)
	}
	httpPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	tlsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{HTTPPort: httpPort, TLSPort: tlsPort, counter: &Counter{}}
	s.DNS, s.DNSAddr, err = acquireDNS()
	if err != nil {
		return nil, err
	}

	profiles := map[string]ca.Profile{}
	for name, p := range opts.Profiles {
		profiles[name] = ca.Profile{Description: p.Description, ValidityPeriod: uint64(p.Validity / time.Second)}
	}
	if len(profiles) == 0 {
		profiles["default"] = ca.Profile{Description: "The default profile", ValidityPeriod: 90 * 24 * 3600}
		profiles["shortlived"] = ca.Profile{Description: "A short-lived profile", ValidityPeriod: 6 * 24 * 3600}
	}
	chain := opts.ChainLength
	if chain == 0 {
		chain = 1
	}

	// Pebble reads its knobs from the environment inside its constructors.
	envMu.Lock()
	restore := setenv(map[string]string{
		"PEBBLE_VA_NOSLEEP":      "1",
		"PEBBLE_VA_ALWAYS_VALID": boolEnv(opts.AlwaysValid),
		"PEBBLE_WFE_NONCEREJECT": strconv.Itoa(opts.NonceRejectPercent),
		"PEBBLE_AUTHZREUSE":      strconv.Itoa(opts.AuthzReusePercent),
	})
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", opts.AlternateRoots, chain, profiles)
	validator := va.New(logger, httpPort, tlsPort, opts.Strict, s.DNSAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, opts.Strict, opts.EABRequired, opts.RetryAfterAuthz, opts.RetryAfterOrder)
	restore()
	envMu.Unlock()

	for id, key := range opts.EABKeys {
		if err := store.AddExternalAccountKeyByID(id, key); err != nil {
			releaseDNS()
			return nil, fmt.Errorf("adding EAB key %s: %w", id, err)
		}
	}

	s.api = httptest.NewUnstartedServer(s.counter.wrap(avoidAuthzDeadlock(front.Handler())))
	s.api.Config.ErrorLog = logger
	s.api.StartTLS()
	s.mgmt = httptest.NewUnstartedServer(front.ManagementHandler())
	s.mgmt.Config.ErrorLog = logger
	s.mgmt.TLS = s.api.TLS
	s.mgmt.StartTLS()
	s.dnsMgmt = httptest.NewServer(dnsManagement(s.DNS))

	s.DirectoryURL = s.api.URL + wfe.DirectoryPath
	s.ManagementURL = s.mgmt.URL
	s.DNSManagementURL = s.dnsMgmt.URL
	s.CACertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.api.Certificate().Raw})
	f, err := os.CreateTemp("", "pebble-api-ca-*.pem")
	if err == nil {
		_, err = f.Write(s.CACertPEM)
		f.Close()
		s.CAFile = f.Name()
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("writing pebble CA file: %w", err)
	}
	return s, nil
}

// Close stops every server.
func (s *Server) Close() {
	s.api.Close()
	s.mgmt.Close()
	s.dnsMgmt.Close()
	releaseDNS()
	os.Remove(s.CAFile)
}

// HTTPClient returns a client that trusts the ACME API's certificate.
func (s *Server) HTTPClient() *http.Client {
	return s.api.Client()
}

// Counter counts the requests the ACME API served.
func (s *Server) Counter() *Counter { return s.counter }

// Roots returns the issuing root certificates (the primary first, then the
// alternates), fetched from the management API.
func (s *Server) Roots(t testing.TB, n int) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for i := 0; i <= n; i++ {
		body := s.get(t, fmt.Sprintf("%s%s%d", s.ManagementURL, wfe.RootCertPath, i))
		if !pool.AppendCertsFromPEM(body) {
			t.Fatalf("root %d: no PEM certificate in %q", i, body)
		}
	}
	return pool
}

// RootPEM returns the PEM of issuing root i.
func (s *Server) RootPEM(t testing.TB, i int) []byte {
	t.Helper()
	return s.get(t, fmt.Sprintf("%s%s%d", s.ManagementURL, wfe.RootCertPath, i))
}

// CertStatus returns Pebble's view of a certificate by serial (hex): the
// JSON of /cert-status-by-serial, with "Status" "Valid" or "Revoked".
func (s *Server) CertStatus(t testing.TB, serialHex string) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(s.get(t, s.ManagementURL+"/cert-status-by-serial/"+serialHex), &out); err != nil {
		t.Fatalf("decoding cert status: %v", err)
	}
	return out
}

// SetRenewalInfo makes the CA's ARI answer (RFC 9773 §4.2) for the
// certificate certPEM the window [start, end], through Pebble's management
// API, which identifies the certificate by its PEM.
func (s *Server) SetRenewalInfo(t testing.TB, certPEM []byte, start, end time.Time) {
	t.Helper()
	ri, _ := json.Marshal(map[string]any{
		"suggestedWindow": map[string]string{
			"start": start.UTC().Format(time.RFC3339),
			"end":   end.UTC().Format(time.RFC3339),
		},
	})
	body, _ := json.Marshal(map[string]string{"certificate": string(certPEM), "ariResponse": string(ri)})
	resp, err := s.api.Client().Post(s.ManagementURL+"/set-renewal-info/", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("setting renewal info: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("setting renewal info: %s: %s", resp.Status, b)
	}
}

func (s *Server) get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := s.api.Client().Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, body)
	}
	return body
}

// challtestsrv installs its DNS handler in miekg/dns's global mux, so two
// instances in one process would answer from whichever was made last. All
// Servers of a process therefore share one DNS server, started with the first
// and stopped with the last; tests use distinct names.
var sharedDNS struct {
	sync.Mutex
	srv  *challtestsrv.ChallSrv
	addr string
	refs int
}

func acquireDNS() (*challtestsrv.ChallSrv, string, error) {
	sharedDNS.Lock()
	defer sharedDNS.Unlock()
	if sharedDNS.refs == 0 {
		port, err := FreePort()
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		srv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{addr}, Log: log.New(io.Discard, "", 0)})
		if err != nil {
			return nil, "", fmt.Errorf("creating challtestsrv: %w", err)
		}
		srv.SetDefaultDNSIPv4("127.0.0.1")
		srv.SetDefaultDNSIPv6("")
		srv.Run()
		sharedDNS.srv, sharedDNS.addr = srv, addr
	}
	sharedDNS.refs++
	return sharedDNS.srv, sharedDNS.addr, nil
}

func releaseDNS() {
	sharedDNS.Lock()
	defer sharedDNS.Unlock()
	sharedDNS.refs--
	if sharedDNS.refs == 0 {
		sharedDNS.srv.Shutdown()
		sharedDNS.srv = nil
	}
}

// avoidAuthzDeadlock serialises Pebble's authorization handler with its
// newOrder handler. Pebble v2.10.3 has a lock-order deadlock between them:
// the authorization handler holds the authorization's lock while it reads
// the account (the store's read lock), and newOrder holds the store's read
// lock while it takes each authorization's (FindValidAuthorization); a
// finalization waiting for the store's write lock meanwhile blocks new
// readers, and all three wait for ever. Many concurrent orders of one
// account (a fleet of daemons issuing 200 certificates) hit it. Every
// request still reaches the real Pebble; only these two never overlap.
func avoidAuthzDeadlock(h http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if kind := pathKind(r.URL.Path); r.Method == http.MethodPost && (kind == "/authZ/" || kind == "/order-plz") {
			mu.Lock()
			defer mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// Counter counts ACME API requests by method and path prefix, and how
// many were in flight at once.
type Counter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64

	// Requests in flight: now, the most at once, and their integral over
	// time since since, up to at.
	flight    int
	peak      int
	integral  time.Duration
	since, at time.Time
}

func (c *Counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + pathKind(r.URL.Path)
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[string]int{}
		}
		c.counts[key]++
		c.inFlightLocked(1)
		c.mu.Unlock()
		c.total.Add(1)
		defer func() {
			c.mu.Lock()
			c.inFlightLocked(-1)
			c.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

// inFlightLocked adds d to the requests in flight. c.mu is held.
func (c *Counter) inFlightLocked(d int) {
	now := time.Now()
	if c.since.IsZero() {
		c.since = now
	} else {
		c.integral += time.Duration(c.flight) * now.Sub(c.at)
	}
	c.at = now
	c.flight += d
	c.peak = max(c.peak, c.flight)
}

// InFlight returns how many requests the server worked on at once since
// the last Reset (or the first request): on average over that time, and
// at the most.
func (c *Counter) InFlight() (avg float64, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since.IsZero() {
		return 0, 0
	}
	c.inFlightLocked(0)
	if d := c.at.Sub(c.since); d > 0 {
		avg = float64(c.integral) / float64(d)
	}
	return avg, c.peak
}

// pathKind reduces a Pebble URL path to its resource kind: "/my-order/abc"
// becomes "/my-order/".
func pathKind(p string) string {
	if i := strings.Index(p[1:], "/"); i >= 0 {
		return p[:i+2]
	}
	return p
}

// Snapshot returns the counts so far, keyed "METHOD /kind/", and the total.
func (c *Counter) Snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out, int(c.total.Load())
}

// Reset sets every count to zero.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.counts = nil
	c.total.Store(0)
	c.integral, c.peak = 0, c.flight
	c.since, c.at = time.Time{}, time.Time{}
	if c.flight > 0 {
		c.since, c.at = time.Now(), time.Now()
	}
	c.mu.Unlock()
}

// FreePort returns a port free for TCP and UDP on 127.0.0.1 at the time of
// the call, for a server the test starts later. It is drawn at random below
// the kernel's ephemeral range, so that between now and then no outgoing
// connection of any process on the machine can be given it as its local
// port (which ":0" ports, taken from that range, are exposed to).
func FreePort() (int, error) {
	low := ephemeralLow()
	for range 200 {
		port := minPort + rand.IntN(low-minPort)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on 127.0.0.1 in [%d, %d)", minPort, low)
}

// minPort is the lowest port FreePort hands out.
const minPort = 10000

// ephemeralLow returns the start of the kernel's ephemeral port range
// (Linux's ip_local_port_range; 32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > minPort+1000 {
				return n
			}
		}
	}
	return 32768
}

func boolEnv(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func setenv(vars map[string]string) (restore func()) {
	old := map[string]*string{}
	for k, v := range vars {
		if prev, ok := os.LookupEnv(k); ok {
			old[k] = &prev
		} else {
			old[k] = nil
		}
		os.Setenv(k, v)
	}
	return func() {
		for k, v := range old {
			if v == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *v)
			}
		}
	}
}

// dnsManagement serves the subset of pebble-challtestsrv's management API
// that DNS tests need, so scripts written against it work unchanged.
func dnsManagement(srv *challtestsrv.ChallSrv) http.Handler {
	type request struct {
		Host   string `json:"host"`
		Value  string `json:"value"`
		Target string `json:"target"`
	}
	handle := func(do func(request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req request
			if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req) != nil || req.Host == "" {
				http.Error(w, "want POST with a JSON body naming host", http.StatusBadRequest)
				return
			}
			do(req)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/set-txt", handle(func(r request) { srv.AddDNSTXTRecord(r.Host, r.Value) }))
	mux.Handle("/clear-txt", handle(func(r request) { srv.DeleteDNSTXTRecord(r.Host) }))
	mux.Handle("/set-cname", handle(func(r request) { srv.AddDNSCNAMERecord(r.Host, r.Target) }))
	mux.Handle("/clear-cname", handle(func(r request) { srv.DeleteDNSCNAMERecord(r.Host) }))
	return mux
}
