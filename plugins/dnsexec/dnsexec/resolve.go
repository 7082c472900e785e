package dnsexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxCNAMEs bounds a chain of CNAMEs.
const maxCNAMEs = 8

// queryTimeout bounds one DNS exchange.
const queryTimeout = 5 * time.Second

// systemResolvers returns the nameservers of /etc/resolv.conf.
func systemResolvers() ([]string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/resolv.conf: %w", err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, errors.New("/etc/resolv.conf names no nameserver")
	}
	return out, nil
}

// withPort adds port 53 to an address without a port.
func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), "53")
}

// resolver asks DNS questions of a list of servers.
type resolver struct {
	servers []string
	log     *slog.Logger
	// nsPort is the port nameservers found through NS records listen on;
	// empty means 53 (tests set another).
	nsPort string
}

// exchange asks one server, over UDP and again over TCP if truncated.
func exchange(ctx context.Context, server, name string, qtype uint16, recurse bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = recurse
	m.SetEdns0(4096, false)
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	r, _, err := (&dns.Client{Net: "udp"}).ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("asking %s for %s %s: %w", server, dns.TypeToString[qtype], name, err)
	}
	return r, nil
}

// ask asks the resolvers in turn until one answers.
func (r *resolver) ask(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	var errs []error
	for _, s := range r.servers {
		m, err := exchange(ctx, s, name, qtype, true)
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// followCNAME follows CNAME records from name (delegation of
// _acme-challenge to another zone) and returns the final name.
func (r *resolver) followCNAME(ctx context.Context, name string) (string, error) {
	name = dns.Fqdn(name)
	for range maxCNAMEs {
		m, err := r.ask(ctx, name, dns.TypeCNAME)
		if err != nil {
			return "", err
		}
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = c.Target
			}
		}
		if next == "" {
			return name, nil
		}
		if err := checkName(next); err != nil {
			return "", fmt.Errorf("CNAME of %s: %w", name, err)
		}
		r.log.Info("following CNAME", "name", name, "target", next)
		name = dns.Fqdn(next)
	}
	return "", fmt.Errorf("following CNAMEs from %s: more than %d", name, maxCNAMEs)
}

// authoritative returns the addresses of the nameservers of the zone that
// holds name, found by asking for NS records from name up to the top-level
// domain. Without any, it returns the resolvers themselves.
func (r *resolver) authoritative(ctx context.Context, name string) (servers []string, zone string, recurse bool) {
	labels := dns.SplitDomainName(name)
	for i := range labels {
		z := dns.Fqdn(strings.Join(labels[i:], "."))
		m, err := r.ask(ctx, z, dns.TypeNS)
		if err != nil || m.Rcode != dns.RcodeSuccess {
			continue
		}
		var hosts []string
		for _, rr := range m.Answer {
			if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, z) {
				hosts = append(hosts, ns.Ns)
			}
		}
		port := r.nsPort
		if port == "" {
			port = "53"
		}
		for _, h := range hosts {
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
				am, err := r.ask(ctx, h, qtype)
				if err != nil {
					continue
				}
				for _, rr := range am.Answer {
					switch a := rr.(type) {
					case *dns.A:
						servers = append(servers, net.JoinHostPort(a.A.String(), port))
					case *dns.AAAA:
						servers = append(servers, net.JoinHostPort(a.AAAA.String(), port))
					}
				}
			}
		}
		if len(servers) > 0 {
			slices.Sort(servers)
			return slices.Compact(servers), z, false
		}
	}
	return r.servers, "", true
}

// waitTXT asks each authoritative server for name's TXT records every
// interval until every one answers value, or ctx ends.
func (r *resolver) waitTXT(ctx context.Context, name, value string, interval time.Duration) error {
	servers, zone, recurse := r.authoritative(ctx, name)
	if zone == "" {
		r.log.Info("no NS records found; checking through the resolvers", "name", name, "resolvers", servers)
	} else {
		r.log.Info("checking the authoritative nameservers", "name", name, "zone", zone, "nameservers", servers)
	}
	pending := slices.Clone(servers)
	start := time.Now()
	for attempt := 1; ; attempt++ {
		var lastErr error
		pending = slices.DeleteFunc(pending, func(s string) bool {
			m, err := exchange(ctx, s, name, dns.TypeTXT, recurse)
			if err != nil {
				lastErr = err
				return false
			}
			for _, rr := range m.Answer {
				if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, dns.Fqdn(name)) && strings.Join(t.Txt, "") == value {
					return true
				}
			}
			return false
		})
		if len(pending) == 0 {
			r.log.Info("TXT record visible", "name", name, "attempts", attempt, "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		attrs := []any{"name", name, "pending", pending, "attempt", attempt}
		if lastErr != nil {
			attrs = append(attrs, "error", lastErr)
		}
		r.log.Info("TXT record not visible yet", attrs...)
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for TXT %s on %s: %w", name, strings.Join(pending, ", "), ctx.Err())
		case <-t.C:
		}
	}
}
