package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCADocExample: the [ca] example of docs/configuration.md loads, with
// order_timeout and trust_roots as written (an absolute trust_roots stays
// as is; "system" is not made a path).
func TestCADocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(\\[ca\\]\n.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no [ca] example in docs/configuration.md")
	}
	rest := minimal[strings.Index(minimal, "[plugins."):]
	cfg, err := Load(writeConfig(t, string(m[1])+rest))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CA.OrderTimeout.Duration != 5*time.Minute || cfg.CA.TrustRoots != "/etc/step/certs/root_ca.crt" {
		t.Errorf("example loaded as order_timeout %v, trust_roots %q", cfg.CA.OrderTimeout, cfg.CA.TrustRoots)
	}
	cfg, err = Load(writeConfig(t, "[ca]\ndirectory = \"letsencrypt\"\ntrust_roots = \"system\"\n"+rest))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CA.TrustRoots != TrustRootsSystem {
		t.Errorf("trust_roots = %q, want %q", cfg.CA.TrustRoots, TrustRootsSystem)
	}
}
