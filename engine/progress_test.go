package engine

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
)

// TestProgressLog: while a wait lasts, a progress line with the elapsed
// time is logged at Info every interval; none after the wait ends.
func TestProgressLog(t *testing.T) {
	var out sdktest.LogBuffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	stop := progressLog(log.With("cert", "www"), 20*time.Millisecond, "waiting for validation")
	time.Sleep(110 * time.Millisecond)
	stop()
	stop() // idempotent
	lines := strings.Count(out.String(), "\n")
	if lines < 2 {
		t.Fatalf("progress lines = %d, want at least 2:\n%s", lines, out.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(l, `level=INFO msg="waiting for validation" cert=www elapsed=`) {
			t.Errorf("progress line %q lacks the message, certificate or elapsed time", l)
		}
	}
	time.Sleep(60 * time.Millisecond)
	if after := strings.Count(out.String(), "\n"); after != lines {
		t.Errorf("%d progress lines after stop", after-lines)
	}
}
