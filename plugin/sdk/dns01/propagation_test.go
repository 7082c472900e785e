package dns01

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/acmehook/acmehook/plugin/sdk"
)

// zone is a tiny DNS server: one zone "example.test." with NS records
// pointing at itself, a CNAME, and TXT records set by the test. It records
// whether TXT questions asked for recursion.
type zone struct {
	mu         sync.Mutex
	txt        map[string]string
	txtRecurse []bool
	addr       string
}

func startZone(t *testing.T) *zone {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zone{txt: map[string]string{}, addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve)}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *zone) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	switch {
	case q.Qtype == dns.TypeNS && q.Name == "example.test.":
		m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(dns.TypeNS), Ns: "ns1.example.test."})
	case q.Qtype == dns.TypeA && q.Name == "ns1.example.test.":
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(127, 0, 0, 1)})
	case q.Qtype == dns.TypeCNAME && q.Name == "_acme-challenge.alias.example.test.":
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: "target.example.test."})
	case q.Qtype == dns.TypeTXT:
		z.txtRecurse = append(z.txtRecurse, r.RecursionDesired)
		if v, ok := z.txt[q.Name]; ok {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{v}})
		}
	}
	w.WriteMsg(m)
}

func TestWaitAsksAuthoritativeServers(t *testing.T) {
	z := startZone(t)
	_, port, _ := net.SplitHostPort(z.addr)
	r := &resolver{servers: []string{z.addr}, log: slog.New(slog.DiscardHandler), nsPort: port}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	name, err := r.followCNAME(ctx, "_acme-challenge.alias.example.test")
	if err != nil || name != "target.example.test." {
		t.Fatalf("followCNAME = %q, %v, want target.example.test.", name, err)
	}
	servers, zoneName, recurse := r.authoritative(ctx, name)
	if zoneName != "example.test." || len(servers) != 1 || servers[0] != "127.0.0.1:"+port || recurse {
		t.Fatalf("authoritative = %v, %q, %v, want [127.0.0.1:%s], example.test., false", servers, zoneName, recurse, port)
	}

	// The record appears after a few rounds.
	go func() {
		time.Sleep(100 * time.Millisecond)
		z.mu.Lock()
		z.txt[name] = "the-value"
		z.mu.Unlock()
	}()
	if err := r.waitTXT(ctx, name, "the-value", 20*time.Millisecond); err != nil {
		t.Fatalf("waitTXT = %v", err)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.txtRecurse) < 2 {
		t.Errorf("TXT asked %d times, want several rounds", len(z.txtRecurse))
	}
	for _, rd := range z.txtRecurse {
		if rd {
			t.Error("TXT question to an authoritative server asked for recursion")
		}
	}

	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if err := r.waitTXT(short, name, "other-value", 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waitTXT(wrong value) = %v, want %v", err, context.DeadlineExceeded)
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"example.com": true, "_acme-challenge.example.com.": true, "a-b.x_y.example": true,
		"": false, ".": false, "-a.example.com": false, "a..b": false, "a/b": false, "a;b": false,
		"a\nb": false, "a b": false, "$(id)": false, "*.example.com": false, strings.Repeat("a", 64) + ".com": false,
	} {
		if err := CheckName(name); (err == nil) != ok || (err != nil && !errors.Is(err, ErrInvalidName)) {
			t.Errorf("CheckName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

// TestConfigWait: Wait follows the CNAME, asks the zone's nameserver and
// returns once the value is there; Skip returns at once; a wrong value
// waits until Timeout.
func TestConfigWait(t *testing.T) {
	z := startZone(t)
	_, port, _ := net.SplitHostPort(z.addr)
	ch := sdk.Challenge{Type: "dns-01", DNS01RecordName: "_acme-challenge.alias.example.test.", DNS01RecordValue: "v1"}
	z.mu.Lock()
	z.txt["target.example.test."] = "v1"
	z.mu.Unlock()
	tests := []struct {
		name    string
		cfg     Config
		ch      sdk.Challenge
		wantErr error
	}{
		{"visible", Config{Resolvers: []string{z.addr}, Interval: sdk.Duration(10 * time.Millisecond), nsPort: port}, ch, nil},
		{"skip", Config{Skip: true}, ch, nil},
		{"wrong value", Config{Resolvers: []string{z.addr}, Timeout: sdk.Duration(200 * time.Millisecond), Interval: sdk.Duration(20 * time.Millisecond), nsPort: port},
			sdk.Challenge{Type: "dns-01", DNS01RecordName: ch.DNS01RecordName, DNS01RecordValue: "other"}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tt.cfg.Wait(ctx, tt.ch, nil); !errors.Is(err, tt.wantErr) {
				t.Errorf("Wait = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
