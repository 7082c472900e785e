package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loadBound is how long one Load of a small input may take before the fuzz
// target calls it a hang. Inputs are at most a few kB; a healthy Load of
// such a file takes well under a millisecond, so the bound only has to
// survive a loaded machine.
const loadBound = 10 * time.Second

// loadWithin runs load on data as the file path and fails t if it has not
// returned within loadBound (the goroutine is left behind; the test fails).
func loadWithin(t *testing.T, path string, data []byte) (*Config, error) {
	t.Helper()
	type result struct {
		cfg *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := load(path, data)
		done <- result{cfg, err}
	}()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-time.After(loadBound):
		t.Fatalf("Load did not return within %s for input %q", loadBound, data)
		return nil, nil
	}
}

// FuzzLoad feeds whole files to the loader: it must return within a
// bound, never panic, reject with an error that wraps ErrInvalid and names
// a line inside the file, and accept only a configuration that validates
// again. Run it with
//
//	go test ./engine/config -run '^$' -fuzz FuzzLoad -fuzztime 10m
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/bad/*.toml")
	seeds = append(seeds, "../../acmehook.toml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("domains = [ } ]"))
	f.Add([]byte("a = [{b = [ { } ] }]\n[x]\n'q'.\"r\" = '''\n]'''"))
	dir := f.TempDir()
	path := filepath.Join(dir, "acmehook.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		cfg, err := loadWithin(t, path, data)
		if err != nil {
			if cfg != nil {
				t.Errorf("Load returned a config with its error %v", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Load error does not wrap ErrInvalid: %v", err)
			}
			lines := strings.Count(string(data), "\n") + 1
			for _, e := range unjoin(err) {
				var ce *Error
				if errors.As(e, &ce) && (ce.Line < 0 || ce.Line > lines) {
					t.Errorf("error %q names line %d of a %d-line file", ce, ce.Line, lines)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("Load accepted the file, Validate then says %v", err)
		}
	})
}
