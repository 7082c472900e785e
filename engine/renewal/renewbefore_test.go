package renewal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestParseRenewBefore(t *testing.T) {
	tests := []struct {
		in       string
		duration time.Duration
		fraction float64
		wantErr  bool
	}{
		{in: "", duration: 0},
		{in: "720h", duration: 720 * time.Hour},
		{in: " 36h30m ", duration: 36*time.Hour + 30*time.Minute},
		{in: "1/3", fraction: 1.0 / 3},
		{in: "1 / 4", fraction: 0.25},
		{in: "33%", fraction: 0.33},
		{in: "0.5", fraction: 0.5},
		{in: "-1h", wantErr: true},
		{in: "0s", wantErr: true},
		{in: "30d", wantErr: true},
		{in: "1/0", wantErr: true},
		{in: "3/2", wantErr: true},
		{in: "0/3", wantErr: true},
		{in: "a/b", wantErr: true},
		{in: "100%", wantErr: true},
		{in: "x%", wantErr: true},
		{in: "1", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "soon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRenewBefore(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrRenewBefore) {
					t.Fatalf("ParseRenewBefore(%q) = %+v, %v, want error wrapping ErrRenewBefore", tt.in, got, err)
				}
				return
			}
			if err != nil || got.Duration != tt.duration || got.Fraction != tt.fraction {
				t.Fatalf("ParseRenewBefore(%q) = {%v %v}, %v, want {%v %v}", tt.in, got.Duration, got.Fraction, err, tt.duration, tt.fraction)
			}
			if got.IsZero() != (tt.in == "") {
				t.Errorf("ParseRenewBefore(%q).IsZero() = %v", tt.in, got.IsZero())
			}
			text, _ := got.MarshalText()
			back, err := ParseRenewBefore(string(text))
			if err != nil || back.Duration != got.Duration || back.Fraction != got.Fraction {
				t.Errorf("round trip of %q through %q = %+v, %v", tt.in, text, back, err)
			}
		})
	}
}

func TestRenewBeforeString(t *testing.T) {
	for _, tt := range []struct {
		rb   RenewBefore
		want string
	}{
		{RenewBefore{Duration: 720 * time.Hour}, "720h0m0s"},
		{RenewBefore{Fraction: 0.25}, "0.25"},
		{RenewBefore{}, ""},
	} {
		if got := tt.rb.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.rb, got, tt.want)
		}
	}
}

// TestRenewBeforeTOML decodes renew_before the way the config package will:
// a TOML string into a RenewBefore field.
func TestRenewBeforeTOML(t *testing.T) {
	var cfg struct {
		Certificate []struct {
			Name        string      `toml:"name"`
			RenewBefore RenewBefore `toml:"renew_before"`
		} `toml:"certificate"`
	}
	doc := `
[[certificate]]
name = "web"
renew_before = "720h"

[[certificate]]
name = "short"
renew_before = "1/3"
`
	if _, err := toml.Decode(doc, &cfg); err != nil {
		t.Fatalf("toml.Decode = %v", err)
	}
	if got := cfg.Certificate[0].RenewBefore; got.Duration != 720*time.Hour || got.String() != "720h" {
		t.Errorf("web renew_before = %+v (%s), want 720h", got, got)
	}
	if got := cfg.Certificate[1].RenewBefore; got.Fraction != 1.0/3 || got.String() != "1/3" {
		t.Errorf("short renew_before = %+v (%s), want 1/3", got, got)
	}

	// The TOML decoder does not wrap the error; its text carries the line
	// and our message.
	_, err := toml.Decode("[[certificate]]\nrenew_before = \"30 days\"\n", &cfg)
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `"30 days" is neither a duration`) {
		t.Errorf("toml.Decode of a bad renew_before = %v, want the line and the renew_before problem", err)
	}
}
