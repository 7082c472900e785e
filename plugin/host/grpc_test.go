package host

import (
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"

	"github.com/acmehook/acmehook/plugin/sdk"
)

// TestConfigThroughTheWire: a plugin's table as the TOML decoder hands it
// to the host (int64, time.Time, arrays of tables) reaches the plugin as
// JSON-compatible values, and sdk.Config.Decode turns those into typed fields.
func TestConfigThroughTheWire(t *testing.T) {
	var table map[string]any
	if _, err := toml.Decode(`
endpoint = "https://dns.example.net"
retries  = 3
ratio    = 0.5
dry_run  = true
timeout  = "90s"
since    = 2026-01-02T03:04:05Z
zones    = ["example.com", "example.net"]
labels   = { team = "ops" }
[[accounts]]
id = 7
`, &table); err != nil {
		t.Fatal(err)
	}
	s, err := configToProto(table)
	if err != nil {
		t.Fatalf("configToProto = %v", err)
	}
	got := s.AsMap()
	want := map[string]any{
		"endpoint": "https://dns.example.net", "retries": float64(3), "ratio": 0.5, "dry_run": true,
		"timeout": "90s", "since": "2026-01-02T03:04:05Z", "zones": []any{"example.com", "example.net"},
		"labels": map[string]any{"team": "ops"}, "accounts": []any{map[string]any{"id": float64(7)}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configuration after the wire (-want +got):\n%s", diff)
	}

	var cfg struct {
		Endpoint string            `json:"endpoint"`
		Retries  int               `json:"retries"`
		Ratio    float64           `json:"ratio"`
		DryRun   bool              `json:"dry_run"`
		Timeout  sdk.Duration      `json:"timeout"`
		Since    time.Time         `json:"since"`
		Zones    []string          `json:"zones"`
		Labels   map[string]string `json:"labels"`
		Accounts []struct {
			ID int `json:"id"`
		} `json:"accounts"`
	}
	if err := (sdk.Config{Values: got}).Decode(&cfg); err != nil {
		t.Fatalf("Config.Decode = %v", err)
	}
	if cfg.Retries != 3 || time.Duration(cfg.Timeout) != 90*time.Second || !cfg.Since.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		len(cfg.Zones) != 2 || cfg.Labels["team"] != "ops" || len(cfg.Accounts) != 1 || cfg.Accounts[0].ID != 7 {
		t.Errorf("Config.Decode = %+v", cfg)
	}

	empty, err := configToProto(nil)
	if err != nil || len(empty.AsMap()) != 0 {
		t.Errorf("configToProto(nil) = %v, %v, want an empty table", empty.AsMap(), err)
	}
}
