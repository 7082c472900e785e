package config

import (
	"fmt"
	"log/slog"
	"time"
)

// Duration is a time.Duration written in TOML as a string that
// time.ParseDuration accepts ("30s", "720h").
type Duration struct {
	time.Duration
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number with a unit, e.g. \"30s\" or \"720h\")", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Secret holds a sensitive string (an EAB HMAC key, a DNS API token). It
// redacts itself whenever it is printed, logged or marshalled; only Reveal
// returns the value.
type Secret struct {
	value string
}

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{value: s} }

const redacted = "[redacted]"

// Reveal returns the secret value. Call it only where the value is used.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

// String implements fmt.Stringer and never returns the value.
func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v) and never returns the value.
func (s Secret) GoString() string { return "config.Secret(" + s.String() + ")" }

// LogValue implements slog.LogValuer and never returns the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler and never returns the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Secret) UnmarshalText(b []byte) error {
	s.value = string(b)
	return nil
}

// Format implements fmt.Formatter so that no verb (%v, %s, %q, %x, %+v)
// can print the value.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'v':
		if f.Flag('#') {
			fmt.Fprint(f, s.GoString())
			return
		}
		fmt.Fprint(f, s.String())
	case 'q':
		fmt.Fprintf(f, "%q", s.String())
	default:
		fmt.Fprint(f, s.String())
	}
}

// KeyType names a key algorithm and size, for account and certificate keys.
type KeyType string

// Key types accepted in acmehook.toml.
const (
	RSA2048 KeyType = "rsa2048"
	RSA3072 KeyType = "rsa3072"
	RSA4096 KeyType = "rsa4096"
	EC256   KeyType = "ec256" // ECDSA P-256
	EC384   KeyType = "ec384" // ECDSA P-384
)

// keyTypes lists every accepted key type.
var keyTypes = []KeyType{RSA2048, RSA3072, RSA4096, EC256, EC384}

func (k KeyType) valid() bool {
	for _, v := range keyTypes {
		if k == v {
			return true
		}
	}
	return false
}
