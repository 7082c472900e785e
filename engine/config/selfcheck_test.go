package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSelfCheckConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg, err := Load(writeConfig(t, minimal))
		if err != nil {
			t.Fatal(err)
		}
		want := SelfCheck{HTTPPort: 80, TLSPort: 443, Timeout: Duration{10 * time.Second}}
		if diff := cmp.Diff(want, cfg.SelfCheck); diff != "" {
			t.Errorf("SelfCheck (-want +got):\n%s", diff)
		}
		if !cfg.Certificates[0].SelfCheckEnabled() {
			t.Error("SelfCheckEnabled() = false without self_check, want true")
		}
	})
	t.Run("set", func(t *testing.T) {
		cfg, err := Load(writeConfig(t, `
[self_check]
http_port = 5002
tls_port = 5001
resolvers = ["127.0.0.1:8053", "192.0.2.53", "[2001:db8::53]:5353"]
timeout = "3s"
`+minimal+"self_check = false\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := SelfCheck{HTTPPort: 5002, TLSPort: 5001, Resolvers: []string{"127.0.0.1:8053", "192.0.2.53:53", "[2001:db8::53]:5353"}, Timeout: Duration{3 * time.Second}}
		if diff := cmp.Diff(want, cfg.SelfCheck); diff != "" {
			t.Errorf("SelfCheck (-want +got):\n%s", diff)
		}
		if cfg.Certificates[0].SelfCheckEnabled() {
			t.Error("SelfCheckEnabled() = true with self_check = false")
		}
	})
	t.Run("invalid", func(t *testing.T) {
		_, err := Load(writeConfig(t, `
[self_check]
http_port = 70000
tls_port = -1
resolvers = ["dns.example.com", "127.0.0.1:0"]
timeout = "-1s"
`+minimal))
		if err == nil {
			t.Fatal("Load accepted an invalid [self_check]")
		}
		for _, want := range []string{
			"acmehook.toml:3: self_check.http_port: must be a port between 1 and 65535, got 70000",
			"acmehook.toml:4: self_check.tls_port: must be a port between 1 and 65535, got -1",
			`self_check.resolvers[0]: "dns.example.com" is not an address`,
			`self_check.resolvers[1]: "127.0.0.1:0" is not an address`,
			"acmehook.toml:6: self_check.timeout: must be positive",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load error lacks %q:\n%v", want, err)
			}
		}
	})
}
