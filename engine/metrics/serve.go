package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// Server timeouts: a scrape (or probe) that does not send its request or
// read its answer within them is dropped; the certificates' state is read
// within SourceTimeout.
const (
	ReadHeaderTimeout = 5 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	// ShutdownTimeout bounds the wait for scrapes in flight when the
	// daemon stops.
	ShutdownTimeout = 5 * time.Second
)

// Handler serves /metrics (the Prometheus text or protobuf format, as the
// scraper asks), /healthz (200 while the process runs) and /readyz (200
// when the configuration is loaded, the storage reachable and every
// plugin the engine started is running; 503 with the reason otherwise).
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer{m}, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{log},
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       SourceTimeout + 5*time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Ready(r.Context()); err != nil {
			log.Warn("not ready", "error", err)
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("serving metrics", "error", fmt.Sprint(v...)) }

// Serve serves Handler on ln until ctx is done, then waits up to
// ShutdownTimeout for requests in flight. It closes ln.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           m.Handler(log),
		ReadHeaderTimeout: ReadHeaderTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serving metrics on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(<-done, http.ErrServerClosed) && err == nil {
		return nil
	}
	return err
}

// WriteFile writes the metrics to path in the Prometheus text format,
// atomically: to a temporary file beside it, synced, then renamed over
// path (mode 0644), so node_exporter's textfile collector never reads a
// partial file.
func (m *Metrics) WriteFile(path string) (err error) {
	mfs, gerr := gatherer{m}.Gather()
	if gerr != nil && len(mfs) == 0 {
		return fmt.Errorf("gathering metrics: %w", gerr)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing metrics file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	enc := expfmt.NewEncoder(f, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("writing metrics file %s: %w", f.Name(), err)
		}
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing metrics file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing metrics file %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing metrics file %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing metrics file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return gerr // metrics gathered despite an error are written, the error reported
}
