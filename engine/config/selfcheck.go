package config

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// Defaults of the [self_check] table.
const (
	DefaultSelfCheckHTTPPort = 80
	DefaultSelfCheckTLSPort  = 443
	DefaultSelfCheckTimeout  = 10 * time.Second
)

// SelfCheck is the [self_check] table: how the engine checks a presented
// challenge from the outside before it asks the CA to validate it. The
// ports are those the CA's validation authority connects to (80 and 443
// for public CAs; Pebble's httpPort and tlsPort in tests).
type SelfCheck struct {
	// HTTPPort is where http-01 responses are fetched.
	HTTPPort int `toml:"http_port"`
	// TLSPort is where tls-alpn-01 certificates are probed.
	TLSPort int `toml:"tls_port"`
	// Resolvers are DNS servers ("host:port", or a host for port 53)
	// asked for dns-01 TXT records (each of them must serve the value) and
	// for the addresses of http-01 and tls-alpn-01 identifiers (the first
	// one). Empty means the system resolver (/etc/resolv.conf, /etc/hosts).
	Resolvers []string `toml:"resolvers"`
	// Timeout bounds the self-check of one challenge, retries included.
	Timeout Duration `toml:"timeout"`
}

// SelfCheckEnabled reports whether the engine self-checks this
// certificate's challenges: self_check, true unless set to false.
func (cert *Certificate) SelfCheckEnabled() bool {
	return cert.SelfCheck == nil || *cert.SelfCheck
}

// completeSelfCheck fills in the [self_check] defaults and adds port 53
// to resolvers given without a port.
func (c *Config) completeSelfCheck() {
	sc := &c.SelfCheck
	if sc.HTTPPort == 0 {
		sc.HTTPPort = DefaultSelfCheckHTTPPort
	}
	if sc.TLSPort == 0 {
		sc.TLSPort = DefaultSelfCheckTLSPort
	}
	if sc.Timeout.Duration == 0 {
		sc.Timeout.Duration = DefaultSelfCheckTimeout
	}
	for i, r := range sc.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil && net.ParseIP(r) != nil {
			sc.Resolvers[i] = net.JoinHostPort(r, "53")
		}
	}
}

// validateSelfCheck checks the [self_check] table.
func (c *Config) validateSelfCheck() []error {
	var errs []error
	sc := c.SelfCheck
	for key, p := range map[string]int{"self_check.http_port": sc.HTTPPort, "self_check.tls_port": sc.TLSPort} {
		if p < 1 || p > 65535 {
			errs = append(errs, c.errorf(key, "must be a port between 1 and 65535, got %d", p))
		}
	}
	for i, r := range sc.Resolvers {
		host, port, err := net.SplitHostPort(r)
		if err == nil {
			var n int
			n, err = strconv.Atoi(port)
			if err == nil && (n < 1 || n > 65535 || host == "") {
				err = fmt.Errorf("bad port or empty host")
			}
		}
		if err != nil {
			errs = append(errs, c.errorf(fmt.Sprintf("self_check.resolvers[%d]", i), "%q is not an address (\"127.0.0.1:8053\", or an IP address for port 53)", r))
		}
	}
	if sc.Timeout.Duration <= 0 {
		errs = append(errs, c.errorf("self_check.timeout", "must be positive"))
	}
	return errs
}
