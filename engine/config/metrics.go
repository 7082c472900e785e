package config

import (
	"net"
	"path/filepath"
	"strconv"
)

// Metrics is the [metrics] table: where acmehook exposes its Prometheus
// metrics (see docs/operations.md, "Metrics and health").
type Metrics struct {
	// Listen is the address acmehook daemon serves /metrics, /healthz and
	// /readyz on ("127.0.0.1:9464"). Empty means no server.
	Listen string `toml:"listen"`
	// File is where acmehook run writes the same metrics after each run,
	// atomically, in the text format of node_exporter's textfile
	// collector. Empty means none; --metrics-file overrides it.
	File string `toml:"file"`
}

// completeMetrics resolves file against the configuration's directory.
func (c *Config) completeMetrics(base string) {
	if c.Metrics.File != "" && !filepath.IsAbs(c.Metrics.File) {
		c.Metrics.File = filepath.Join(base, c.Metrics.File)
	}
}

// validateMetrics checks that listen is a host:port address.
func (c *Config) validateMetrics() []error {
	if c.Metrics.Listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.Metrics.Listen)
	if err == nil {
		var p int
		if p, err = strconv.Atoi(port); err == nil && (p < 0 || p > 65535) {
			err = strconv.ErrRange
		}
	}
	if err != nil {
		return []error{c.errorf("metrics.listen", "%q is not an address to listen on (\"127.0.0.1:9464\", \":9464\")", c.Metrics.Listen)}
	}
	return nil
}
