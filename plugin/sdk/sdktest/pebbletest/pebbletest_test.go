package pebbletest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestStartServesDirectoryAndDNS(t *testing.T) {
	s := Start(t, Options{})
	resp, err := s.HTTPClient().Get(s.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	if dir["newOrder"] == nil {
		t.Errorf("directory = %v, want a newOrder URL", dir)
	}
	if got, _ := s.Counter().Snapshot(); got["GET /dir"] != 1 {
		t.Errorf("counter = %v, want one GET /dir", got)
	}

	s.DNS.AddDNSTXTRecord("_acme-challenge.example.com.", "abc")
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge.example.com.", dns.TypeTXT)
	in, err := dns.Exchange(m, s.DNSAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 1 || in.Answer[0].(*dns.TXT).Txt[0] != "abc" {
		t.Errorf("TXT answer = %v, want abc", in.Answer)
	}
	m.SetQuestion("anything.example.", dns.TypeA)
	in, err = dns.Exchange(m, s.DNSAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Answer) != 1 || !in.Answer[0].(*dns.A).A.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("A answer = %v, want 127.0.0.1", in.Answer)
	}
	if s.RootPEM(t, 0) == nil {
		t.Error("no root PEM")
	}
}

// TestFaultProxy: a refusal applies as many times as asked, with its
// problem and headers; then requests reach Pebble, whose URLs name the
// proxy, and a Rewrite edits the answer; Count counts every request.
func TestFaultProxy(t *testing.T) {
	s := Start(t, Options{})
	p := NewFaultProxy(t, s)
	p.Add(Fault{Kind: "GET /dir", Times: 1, Status: http.StatusTooManyRequests, RetryAfter: "7",
		Header: http.Header{"Link": {`<https://example.com/tos>;rel="terms-of-service"`}}})
	p.Add(Fault{Kind: "GET /dir", Rewrite: EditJSON(func(m map[string]any) { delete(m, "keyChange") })})
	get := func() (*http.Response, map[string]any) {
		t.Helper()
		resp, err := p.HTTPClient().Get(p.DirectoryURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return resp, m
	}
	resp, problem := get()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "7" || resp.Header.Get("Link") == "" ||
		problem["type"] != "urn:ietf:params:acme:error:rateLimited" || problem["detail"] != "injected" {
		t.Errorf("refused GET /dir = %d %v %v, want 429 rateLimited with Retry-After 7 and the Link", resp.StatusCode, resp.Header, problem)
	}
	resp, dir := get()
	if resp.StatusCode != http.StatusOK || dir["keyChange"] != nil || !strings.HasPrefix(fmt.Sprint(dir["newOrder"]), p.URL+"/") {
		t.Errorf("second GET /dir = %d %v, want Pebble's directory through the proxy without keyChange", resp.StatusCode, dir)
	}
	if n := p.Count("GET /dir"); n != 2 {
		t.Errorf("Count(GET /dir) = %d, want 2", n)
	}
	if got, _ := s.Counter().Snapshot(); got["GET /dir"] != 1 {
		t.Errorf("Pebble saw %d GET /dir, want 1 (the refusal is the proxy's)", got["GET /dir"])
	}
}
