package luahost

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Default timeouts of acmehook.http.request and acmehook.tls.probe.
const (
	DefaultHTTPTimeout  = 30 * time.Second
	DefaultProbeTimeout = 10 * time.Second
)

// http.request(req) -> response | nil, err
//
// req: url (http or https), method (default "GET", or "POST" when body is
// set), headers (table), body (string), timeout (seconds or "10s"). The
// response has status (number), headers (lowercase name -> first value) and
// body (capped at Options.OutputLimit; body_truncated says so). Any status
// is a response; only transport failures are errors.
func (m *module) httpRequest(L *lua.LState) int {
	ctx := m.ctx(L)
	req := L.CheckTable(1)
	url, ok := req.RawGetString("url").(lua.LString)
	if !ok || !(strings.HasPrefix(string(url), "http://") || strings.HasPrefix(string(url), "https://")) {
		L.ArgError(1, "url must be an http:// or https:// URL string")
	}
	body, hasBody := req.RawGetString("body").(lua.LString)
	method := "GET"
	if hasBody {
		method = "POST"
	}
	if s, ok := req.RawGetString("method").(lua.LString); ok {
		method = strings.ToUpper(string(s))
	}
	timeout := durationValue(L, req.RawGetString("timeout"), 1, DefaultHTTPTimeout)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rbody io.Reader
	if hasBody {
		rbody = strings.NewReader(string(body))
	}
	hreq, err := http.NewRequestWithContext(ctx, method, string(url), rbody)
	if err != nil {
		return fail(L, fmt.Errorf("building request: %w", err))
	}
	if h, ok := req.RawGetString("headers").(*lua.LTable); ok {
		h.ForEach(func(k, v lua.LValue) {
			hreq.Header.Set(lua.LVAsString(k), lua.LVAsString(v))
		})
	}
	if hreq.Header.Get("User-Agent") == "" {
		hreq.Header.Set("User-Agent", "acmehook-lua")
	}
	resp, err := m.http.Do(hreq)
	if err != nil {
		return fail(L, fmt.Errorf("%s request: %w", method, err))
	}
	defer resp.Body.Close()
	limit := int64(m.cfg.OutputLimit)
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fail(L, fmt.Errorf("reading response body: %w", err))
	}
	res := L.CreateTable(0, 4)
	res.RawSetString("status", lua.LNumber(resp.StatusCode))
	res.RawSetString("body_truncated", lua.LBool(int64(len(b)) > limit))
	if int64(len(b)) > limit {
		b = b[:limit]
	}
	res.RawSetString("body", lua.LString(b))
	headers := L.CreateTable(0, len(resp.Header))
	for k, v := range resp.Header {
		headers.RawSetString(strings.ToLower(k), lua.LString(v[0]))
	}
	res.RawSetString("headers", headers)
	L.Push(res)
	return 1
}

// tls.probe(address, [servername], [opts]) -> info | nil, err
//
// Connects to address ("host:port"), sends servername as SNI (default: the
// host part) and reports the leaf certificate served: the fields of
// x509.parse plus verified (bool) and verify_error (string) from verifying
// the chain for servername against opts.ca_file or the system roots. A certificate that fails verification is still reported.
// opts: timeout (seconds or "5s"), ca_file (PEM path).
func (m *module) tlsProbe(L *lua.LState) int {
	ctx := m.ctx(L)
	addr := L.CheckString(1)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		L.ArgError(1, fmt.Sprintf("address %q is not host:port", addr))
	}
	name := L.OptString(2, host)
	opts := L.OptTable(3, L.NewTable())
	timeout := durationValue(L, opts.RawGetString("timeout"), 3, DefaultProbeTimeout)
	var roots *x509.CertPool // nil: the system roots
	if f, ok := opts.RawGetString("ca_file").(lua.LString); ok {
		pemData, err := os.ReadFile(string(f))
		if err != nil {
			return fail(L, fmt.Errorf("probing %s: reading ca_file: %w", addr, err))
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemData) {
			return fail(L, fmt.Errorf("probing %s: no certificates in %s", addr, f))
		}
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{
		ServerName: name,
		// Verification happens below so that a wrong certificate is
		// reported rather than hidden behind a handshake error.
		InsecureSkipVerify: true,
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fail(L, fmt.Errorf("probing %s: %w", addr, err))
	}
	state := conn.(*tls.Conn).ConnectionState()
	conn.Close()
	if len(state.PeerCertificates) == 0 {
		return fail(L, fmt.Errorf("probing %s: no certificate served", addr))
	}
	leaf := state.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	t := certTable(L, leaf)
	_, verr := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	t.RawSetString("verified", lua.LBool(verr == nil))
	if verr != nil {
		t.RawSetString("verify_error", lua.LString(verr.Error()))
	}
	t.RawSetString("server_name", lua.LString(name))
	L.Push(t)
	return 1
}
