package dns01

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

	"github.com/acmehook/acmehook/plugin/sdk"
)

// Defaults and bounds.
const (
	// DefaultTimeout bounds Wait when Config.Timeout is zero.
	DefaultTimeout = 5 * time.Minute
	// DefaultInterval is the pause between rounds of questions when
	// Config.Interval is zero.
	DefaultInterval = 5 * time.Second
	// QueryTimeout bounds one DNS exchange.
	QueryTimeout = 5 * time.Second
	// MaxCNAMEs bounds a chain of CNAMEs.
	MaxCNAMEs = 8
)

// ErrInvalidName is returned for a name that is not a plain DNS name
// (letters, digits, '-' and '_'), such as a CNAME target a plugin must not
// pass on to a DNS provider or a program.
var ErrInvalidName = errors.New("dns01: not a valid DNS name")

// Config says where and how long to look. Its json tags are the keys a
// plugin's configuration table uses; embed it to offer them.
type Config struct {
	// Resolvers are the recursive resolvers ("192.0.2.53", "[::1]:5353";
	// port 53 when none is given) used to follow CNAMEs and find the
	// nameservers. Empty means those of /etc/resolv.conf.
	Resolvers []string `json:"resolvers"`
	// Timeout bounds Wait; zero means DefaultTimeout.
	Timeout sdk.Duration `json:"propagation_timeout"`
	// Interval is the pause between rounds; zero means DefaultInterval.
	Interval sdk.Duration `json:"propagation_interval"`
	// Skip makes Wait return at once (for a DNS that the host cannot see
	// the way the CA does).
	Skip bool `json:"skip_propagation"`

	// nsPort is the port of the nameservers found through NS records;
	// empty means 53 (the tests' servers listen elsewhere).
	nsPort string
}

// Wait waits until every authoritative nameserver of the zone holding the
// challenge's TXT record (after following CNAMEs) answers its value, or
// until Timeout or ctx ends. It logs its progress to log (nil discards).
func (c Config) Wait(ctx context.Context, ch sdk.Challenge, log *slog.Logger) error {
	if c.Skip {
		return nil
	}
	if ch.Type != "dns-01" || ch.DNS01RecordName == "" {
		return fmt.Errorf("dns01: challenge is %q, not dns-01 with a record name", ch.Type)
	}
	r, err := c.resolver(log)
	if err != nil {
		return err
	}
	timeout, interval := time.Duration(c.Timeout), time.Duration(c.Interval)
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name, err := r.followCNAME(ctx, ch.DNS01RecordName)
	if err != nil {
		return err
	}
	return r.waitTXT(ctx, name, ch.DNS01RecordValue, interval)
}

// FollowCNAME follows CNAME records from name and returns the final name,
// fully qualified: where a record for name must be set. A target that is
// not a plain DNS name is an error wrapping ErrInvalidName.
func (c Config) FollowCNAME(ctx context.Context, name string, log *slog.Logger) (string, error) {
	r, err := c.resolver(log)
	if err != nil {
		return "", err
	}
	return r.followCNAME(ctx, name)
}

func (c Config) resolver(log *slog.Logger) (*resolver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	servers := slices.Clone(c.Resolvers)
	if len(servers) == 0 {
		var err error
		if servers, err = systemResolvers(); err != nil {
			return nil, fmt.Errorf("dns01: no resolvers configured and %w", err)
		}
	}
	for i, s := range servers {
		servers[i] = withPort(s)
	}
	return &resolver{servers: servers, log: log, nsPort: c.nsPort}, nil
}

// CheckName accepts a DNS name of letters, digits, '-' and '_' in labels
// of at most 63 bytes that do not begin with '-', with an optional final
// dot, and returns an error wrapping ErrInvalidName for anything else.
func CheckName(name string) error {
	n := strings.TrimSuffix(name, ".")
	if n == "" || len(n) > 253 {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: %q", ErrInvalidName, name)
			}
		}
	}
	return nil
}

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
	nsPort  string
}

// exchange asks one server, over UDP and again over TCP if truncated.
func exchange(ctx context.Context, server, name string, qtype uint16, recurse bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = recurse
	m.SetEdns0(4096, false)
	ctx, cancel := context.WithTimeout(ctx, QueryTimeout)
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

// followCNAME follows CNAME records from name and returns the final name.
func (r *resolver) followCNAME(ctx context.Context, name string) (string, error) {
	name = dns.Fqdn(name)
	for range MaxCNAMEs {
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
		if err := CheckName(next); err != nil {
			return "", fmt.Errorf("CNAME of %s: %w", name, err)
		}
		r.log.Info("following CNAME", "name", name, "target", next)
		name = dns.Fqdn(next)
	}
	return "", fmt.Errorf("following CNAMEs from %s: more than %d", name, MaxCNAMEs)
}

// authoritative returns the addresses of the nameservers of the zone that
// holds name, found by asking for NS records from name up to the top-level
// domain. Without any, it returns the resolvers themselves.
func (r *resolver) authoritative(ctx context.Context, name string) (servers []string, zone string, recurse bool) {
	labels := dns.SplitDomainName(name)
	port := r.nsPort
	if port == "" {
		port = "53"
	}
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
