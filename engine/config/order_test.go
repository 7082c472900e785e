package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loadText writes body as acmehook.toml in a new directory and loads it.
func loadText(t *testing.T, body string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "acmehook.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

// TestEABKeyOnlyWhenCreating: the configuration loads whatever state the
// EAB HMAC key's file or variable is in; EABKey, which only creating an
// account calls, reads it then and names the key and its line when it is
// missing, too large or not base64url.
func TestEABKeyOnlyWhenCreating(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.key")
	if err := os.WriteFile(big, bytes.Repeat([]byte("a"), maxSecretSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.key")
	if err := os.WriteFile(good, []byte("ZWFi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ACMEHOOK_TEST_EAB_SET", "ZWFi")
	tests := []struct {
		name, ca, want string // want "" means the key "eab"
	}{
		{"no key at all", ``, `:4: ca.eab_kid: creating the account needs the EAB HMAC key: set eab_hmac_key, eab_hmac_key_file or eab_hmac_key_env`},
		{"file gone", `eab_hmac_key_file = "gone.key"`, `:5: ca.eab_hmac_key_file: creating the account needs the EAB HMAC key: reading secret file gone.key: no such file or directory`},
		{"file too large", `eab_hmac_key_file = "` + big + `"`, `:5: ca.eab_hmac_key_file: creating the account needs the EAB HMAC key: secret file ` + big + ` is larger than 64 KiB`},
		{"file not base64url", `eab_hmac_key_file = "` + bad + `"`, `:5: ca.eab_hmac_key_file: the EAB HMAC key is not base64url`},
		{"variable unset", `eab_hmac_key_env = "ACMEHOOK_TEST_EAB_UNSET"`, `:5: ca.eab_hmac_key_env: creating the account needs the EAB HMAC key: environment variable ACMEHOOK_TEST_EAB_UNSET is not set or empty`},
		{"file", `eab_hmac_key_file = "` + good + `"`, ""},
		{"variable", `eab_hmac_key_env = "ACMEHOOK_TEST_EAB_SET"`, ""},
		{"inline", `eab_hmac_key = "ZWFi"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadText(t, "[ca]\ndirectory = \"letsencrypt\"\neab_algorithm = \"HS384\"\neab_kid = \"kid-1\"\n"+tt.ca+"\n")
			if err != nil {
				t.Fatalf("Load: %v (the key is read only when an account is created)", err)
			}
			if cfg.CA.EABAlgorithm != HS384 {
				t.Errorf("EABAlgorithm = %q, want HS384", cfg.CA.EABAlgorithm)
			}
			key, err := cfg.EABKey()
			if tt.want == "" {
				if err != nil || string(key) != "eab" {
					t.Errorf("EABKey() = %q, %v; want \"eab\"", key, err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || !strings.HasSuffix(err.Error(), tt.want) {
				t.Errorf("EABKey() error = %v, want an *Error ending in %q", err, tt.want)
			}
		})
	}
}

// TestOrderOptionsLoad: the account and order keys are typed when the
// file loads: the EAB algorithm, the staging directory's short name, the
// order's validity (offset date-times, a duration) and the profile.
func TestOrderOptionsLoad(t *testing.T) {
	const head = "[ca]\ndirectory = \"https://acme.example/dir\"\n"
	const cert = "[plugins.web]\npath = \"webroot\"\n[[certificate]]\nname = \"www\"\ndomains = [\"www.example.com\"]\nsolver = \"web\"\n"
	t.Run("accepted", func(t *testing.T) {
		cfg, err := loadText(t, head+"staging_directory = \"letsencrypt-staging\"\n"+cert+
			"not_before = 2030-01-02T03:04:05Z\nnot_after = 2030-01-09T03:04:05+02:00\n"+
			"[[certificate]]\nname = \"short\"\ndomains = [\"192.0.2.1\"]\nsolver = \"web\"\nvalidity = \"72h\"\nprofile = \"auto\"\n")
		if err != nil {
			t.Fatal(err)
		}
		if d, staging := cfg.CA.DryRunDirectory(); d != LetsEncryptStaging || !staging {
			t.Errorf("DryRunDirectory() = %q, %v; want %q, true", d, staging, LetsEncryptStaging)
		}
		www, short := cfg.Certificates[0], cfg.Certificates[1]
		nb, na := www.OrderValidity(time.Now())
		if want := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC); !nb.Equal(want) {
			t.Errorf("not_before = %s, want %s", nb, want)
		}
		if want := time.Date(2030, 1, 9, 1, 4, 5, 0, time.UTC); !na.Equal(want) {
			t.Errorf("not_after = %s, want %s", na, want)
		}
		now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
		if nb, na := short.OrderValidity(now); !nb.IsZero() || !na.Equal(now.Add(72*time.Hour)) {
			t.Errorf("validity 72h at %s = %s, %s; want no notBefore and notAfter %s", now, nb, na, now.Add(72*time.Hour))
		}
		if www.ProfileSetting() != ProfileAuto || short.ProfileSetting() != ProfileAuto {
			t.Errorf("ProfileSetting() = %q, %q; want auto for empty and for \"auto\"", www.ProfileSetting(), short.ProfileSetting())
		}
	})
	refused := []struct {
		name, body, want string
	}{
		{"eab algorithm", "eab_kid = \"k\"\neab_hmac_key = \"ZWFi\"\neab_algorithm = \"HS1\"\n", `:5: ca.eab_algorithm: unknown EAB algorithm "HS1"; use HS256, HS384 or HS512`},
		{"eab algorithm without kid", "eab_algorithm = \"HS512\"\n", `:3: ca.eab_algorithm: eab_algorithm needs eab_kid`},
		{"eab file without kid", "eab_hmac_key_file = \"x\"\n", `:3: ca.eab_hmac_key_file: eab_hmac_key_file needs eab_kid`},
		{"staging directory", "staging_directory = \"http://acme.example/staging\"\n", `:3: ca.staging_directory: "http://acme.example/staging" is not an https URL`},
		{"local date-time", cert + "not_after = 2030-01-09T03:04:05\n", `:9: certificate[0].not_after: a date-time needs its offset`},
		{"not a date-time", cert + "not_before = \"tomorrow\"\n", `:9: certificate[0].not_before: incompatible types: TOML value has type string; destination has type datetime`},
		{"validity and not_after", cert + "validity = \"24h\"\nnot_after = 2030-01-09T03:04:05Z\n", `:9: certificate[0].validity: set either not_after or validity, not both`},
		{"negative validity", cert + "validity = \"-24h\"\n", `:9: certificate[0].validity: must be positive`},
		{"not_after before not_before", cert + "not_before = 2030-01-09T00:00:00Z\nnot_after = 2030-01-02T00:00:00Z\n", `:10: certificate[0].not_after: 2030-01-02T00:00:00Z is not after not_before (2030-01-09T00:00:00Z)`},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadText(t, head+tt.body)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v, want an ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}
