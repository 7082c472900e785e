package pebbletest

import (
	"encoding/json"
	"net"
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
