package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// recipient is an age public key made for these tests with
// age.GenerateX25519Identity (its identity was thrown away).
const recipient = "age1yf0nm9x3fyzs4klkhj003eduvglwa0qw3jgexxd0yyqu3uklfc4sm943kn"

func TestStorageForms(t *testing.T) {
	tests := []struct {
		name, body  string
		backend     string
		path        string // relative to the config directory
		prefix      string
		ttl         time.Duration
		node        string
		endpoints   int
		recipients  int
		hasPassword bool
	}{
		{name: "default", body: "", backend: "file", path: "acmehook-data"},
		{name: "short form", body: `storage = "data"` + "\n", backend: "file", path: "data"},
		{name: "table", body: "[storage]\npath = \"d2\"\n", backend: "file", path: "d2"},
		{name: "etcd", body: `[storage]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379", "https://10.0.0.2:2379"]
username = "acmehook"
password = "pw"
node = "n1"
lease_ttl = "5s"
prefix = "/fleet/a/"
age_recipients = ["` + recipient + `"]
age_identity_file = "age.key"
`, backend: "etcd", path: "acmehook-data", prefix: "/fleet/a/", ttl: 5 * time.Second, node: "n1", endpoints: 2, recipients: 1, hasPassword: true},
		{name: "etcd defaults", body: `[storage]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
node = "n1"
age_recipients = ["` + recipient + `"]
age_identity_file = "age.key"
`, backend: "etcd", path: "acmehook-data", prefix: "/acmehook/", ttl: 15 * time.Second, node: "n1", endpoints: 1, recipients: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body+minimal)
			cfg, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Store
			dir := filepath.Dir(p)
			if s.Backend != tt.backend || s.Path != filepath.Join(dir, tt.path) || cfg.Storage != s.Path {
				t.Errorf("backend %q path %q Storage %q, want %q %q", s.Backend, s.Path, cfg.Storage, tt.backend, filepath.Join(dir, tt.path))
			}
			if tt.backend != "etcd" {
				return
			}
			if s.Prefix != tt.prefix || s.LeaseTTL.Duration != tt.ttl || s.Node != tt.node || len(s.Endpoints) != tt.endpoints || len(s.Recipients) != tt.recipients {
				t.Errorf("etcd settings = %+v", s)
			}
			if s.AgeIdentityFile != filepath.Join(dir, "age.key") {
				t.Errorf("age_identity_file = %q, want it resolved against the config directory", s.AgeIdentityFile)
			}
			if (s.Password.Reveal() != "") != tt.hasPassword {
				t.Errorf("password set = %v, want %v", s.Password.Reveal() != "", tt.hasPassword)
			}
		})
	}
}

func TestStorageBad(t *testing.T) {
	t.Setenv("ACMEHOOK_TEST_EMPTY", "")
	tests := []struct {
		name, body string
		want       []string // each an error line
	}{
		{"unknown backend", "[storage]\nbackend = \"s3\"\n", []string{`acmehook.toml:2: storage.backend: unknown backend "s3"; use "file" or "etcd"`}},
		{"etcd keys with file", "[storage]\nendpoints = [\"http://x:1\"]\nnode = \"a\"\n", []string{
			`acmehook.toml:2: storage.endpoints: applies only with backend = "etcd"`,
			`acmehook.toml:3: storage.node: applies only with backend = "etcd"`}},
		{"etcd missing everything", "[storage]\nbackend = \"etcd\"\nnode = \"a\"\n", []string{
			`acmehook.toml:1: storage.endpoints: missing`,
			`acmehook.toml:1: storage.age_recipients: missing`,
			`acmehook.toml:1: storage.age_identity_file: missing`}},
		{"etcd bad values", `[storage]
backend = "etcd"
endpoints = ["10.0.0.1:2379", "ftp://x:1"]
cert_file = "c.pem"
password = "pw"
password_env = "X"
prefix = "acmehook"
lease_ttl = "1s"
node = "a b"
relay_timeout = "10m"
age_recipients = ["age1bogus"]
age_identity_file = "id"
`, []string{
			`acmehook.toml:3: storage.endpoints[0]: "10.0.0.1:2379" is not an etcd client URL`,
			`acmehook.toml:3: storage.endpoints[1]: "ftp://x:1" is not an etcd client URL`,
			`acmehook.toml:4: storage.cert_file: cert_file and key_file go together`,
			`acmehook.toml:5: storage.password: set only one of password, password_file and password_env`,
			`acmehook.toml:5: storage.password: a password needs username`,
			`acmehook.toml:7: storage.prefix: "acmehook" must start and end with /`,
			`acmehook.toml:8: storage.lease_ttl: must be between 2s and 10m0s, got 1s`,
			`acmehook.toml:9: storage.node: "a b" is not a node name`,
			`acmehook.toml:10: storage.relay_timeout: must be more than 0s and at most 5m0s, got 10m0s`,
			`acmehook.toml:11: storage.age_recipients[0]: "age1bogus" is not an age recipient`}},
		{"empty password variable", "[storage]\nbackend = \"etcd\"\nendpoints = [\"http://x:1\"]\nnode = \"a\"\nusername = \"u\"\npassword_env = \"ACMEHOOK_TEST_EMPTY\"\nage_recipients = [\"" + recipient + "\"]\nage_identity_file = \"id\"\n", []string{
			`acmehook.toml:6: storage.password_env:`}},
		{"wrong type", "[storage]\nlease_ttl = 5\n", []string{`acmehook.toml:2: storage.lease_ttl: incompatible types`}},
		{"unknown key", "[storage]\nbackend = \"file\"\nendpoint = \"x\"\n", []string{`acmehook.toml:3: storage.endpoint: unknown key`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.body+minimal))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load = %v, want ErrInvalid", err)
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					if strings.Contains(l, "acmehook.toml:") && strings.HasPrefix(l[strings.Index(l, "acmehook.toml:"):], w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no error line starting %q in:\n%v", w, err)
				}
			}
		})
	}
}

func TestStorageFiles(t *testing.T) {
	body := `[storage]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
node = "n1"
ca_file = "missing-ca.pem"
age_recipients = ["` + recipient + `"]
age_identity_file = "age.key"
` + minimal
	p := writeConfig(t, body)
	dir := filepath.Dir(p)
	if err := os.WriteFile(filepath.Join(dir, "age.key"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "age.key"), 0o644)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.CheckFiles()
	for _, want := range []string{"storage.ca_file: missing-ca.pem: no such file", "storage.age_identity_file: age.key has mode 0644"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckFiles = %v, want an error containing %q", err, want)
		}
	}
	os.Chmod(filepath.Join(dir, "age.key"), 0o600)
	if err := cfg.CheckFiles(); err == nil || strings.Contains(err.Error(), "age_identity_file") {
		t.Errorf("CheckFiles with a 0600 identity = %v, want only the ca_file error", err)
	}
}

// TestStorageDocExample: the [storage] example of docs/configuration.md
// loads.
func TestStorageDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(\\[storage\\]\n.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no [storage] example in docs/configuration.md")
	}
	t.Setenv("ETCD_PASSWORD", "pw")
	cfg, err := Load(writeConfig(t, string(m[1])+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Backend != BackendEtcd || cfg.Store.Password.Reveal() != "pw" {
		t.Errorf("example loaded as %+v", cfg.Store)
	}
}

func TestStorageWhere(t *testing.T) {
	file := Storage{Backend: BackendFile, Path: "/var/lib/acmehook"}
	e := Storage{Backend: BackendEtcd, Path: "/var/lib/acmehook", Endpoints: []string{"https://a:2379", "https://b:2379"}, Prefix: "/acmehook/", Node: "n1"}
	if got := file.Where(); got != "/var/lib/acmehook" {
		t.Errorf("file Where() = %q", got)
	}
	if got, want := e.Where(), "etcd https://a:2379,https://b:2379/acmehook/ (node n1)"; got != want {
		t.Errorf("etcd Where() = %q, want %q", got, want)
	}
	moved := e
	moved.Prefix = "/other/"
	if moved.Where() == e.Where() {
		t.Error("a new prefix does not move the storage")
	}
}
