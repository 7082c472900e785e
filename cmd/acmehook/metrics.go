package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/metrics"
)

// serveMetrics starts serving m on cfg's [metrics] listen address, if set,
// until ctx is done; wait returns once the server stopped.
func (c *cli) serveMetrics(ctx context.Context, cfg *config.Config, m *metrics.Metrics) (wait func(), err error) {
	if cfg.Metrics.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	c.log.Info("serving metrics", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Serve(ctx, ln, c.log); err != nil {
			c.log.Error("metrics server stopped", "error", err)
		}
	}()
	return func() { <-done }, nil
}

// metricsFile is where run writes its metrics: --metrics-file, else
// [metrics] file; empty for none.
func (c *cli) metricsFile(cfg *config.Config) string {
	if c.metricsPath != "" {
		return c.metricsPath
	}
	return cfg.Metrics.File
}

// absMetricsFlag makes --metrics-file absolute, so the path logged and
// written is the one the user meant from the working directory.
func (c *cli) absMetricsFlag() error {
	if c.metricsPath == "" {
		return nil
	}
	p, err := filepath.Abs(c.metricsPath)
	if err != nil {
		return usagef("--metrics-file: %v", err)
	}
	c.metricsPath = p
	return nil
}
