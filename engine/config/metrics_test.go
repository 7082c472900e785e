package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestMetricsConfig(t *testing.T) {
	t.Run("set", func(t *testing.T) {
		path := writeConfig(t, "[metrics]\nlisten = \"127.0.0.1:9464\"\nfile = \"textfile/acmehook.prom\"\n"+minimal)
		cfg, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Metrics.Listen != "127.0.0.1:9464" {
			t.Errorf("Listen = %q", cfg.Metrics.Listen)
		}
		if want := filepath.Join(filepath.Dir(path), "textfile/acmehook.prom"); cfg.Metrics.File != want {
			t.Errorf("File = %q, want %q (relative to the configuration)", cfg.Metrics.File, want)
		}
	})
	for _, listen := range []string{"9464", "127.0.0.1:99999", "127.0.0.1:http-alt"} {
		t.Run("invalid "+listen, func(t *testing.T) {
			_, err := Load(writeConfig(t, "\n[metrics]\nlisten = \""+listen+"\"\n"+minimal))
			if err == nil {
				t.Fatalf("Load accepted listen = %q", listen)
			}
			if want := "acmehook.toml:3: metrics.listen: \"" + listen + "\" is not an address to listen on"; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}

// TestMetricsDocExample: the [metrics] example of docs/configuration.md
// loads.
func TestMetricsDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(\\[metrics\\]\n.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no [metrics] example in docs/configuration.md")
	}
	cfg, err := Load(writeConfig(t, string(m[1])+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen == "" || cfg.Metrics.File == "" {
		t.Errorf("example loaded as %+v", cfg.Metrics)
	}
}
