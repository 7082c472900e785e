package renewal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrRenewBefore is returned (wrapped) for a renew_before value that cannot be parsed.
var ErrRenewBefore = errors.New("renewal: invalid renew_before")

// RenewBefore overrides the default lifetime rule for one certificate: renew
// either a fixed Duration before expiry, or when a Fraction of the
// certificate's lifetime remains. At most one of the two is set; the zero
// value means "use the default rule".
//
// In TOML it is a string (it implements [encoding.TextUnmarshaler]):
// a Go duration ("720h", "36h30m") or a fraction of the lifetime written as
// "1/3", "33%" or "0.33".
type RenewBefore struct {
	// Duration before NotAfter at which to renew; > 0 when set.
	Duration time.Duration
	// Fraction of the lifetime that remains when renewing; in (0, 1) when set.
	Fraction float64
	// text is the value as the user wrote it, for messages.
	text string
}

// ParseRenewBefore parses a renew_before value; see [RenewBefore].
// The empty string yields the zero value.
func ParseRenewBefore(s string) (RenewBefore, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return RenewBefore{}, nil
	}
	if num, den, ok := strings.Cut(s, "/"); ok {
		n, err1 := strconv.ParseFloat(strings.TrimSpace(num), 64)
		d, err2 := strconv.ParseFloat(strings.TrimSpace(den), 64)
		if err := errors.Join(err1, err2); err != nil || d == 0 {
			return RenewBefore{}, fmt.Errorf("%w: %q is not a fraction like \"1/3\"", ErrRenewBefore, s)
		}
		return fraction(s, n/d)
	}
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil {
			return RenewBefore{}, fmt.Errorf("%w: %q is not a percentage like \"33%%\"", ErrRenewBefore, s)
		}
		return fraction(s, f/100)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return fraction(s, f)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return RenewBefore{}, fmt.Errorf("%w: %q is neither a duration (\"720h\") nor a lifetime fraction (\"1/3\", \"33%%\")", ErrRenewBefore, s)
	}
	if d <= 0 {
		return RenewBefore{}, fmt.Errorf("%w: duration %q must be positive", ErrRenewBefore, s)
	}
	return RenewBefore{Duration: d, text: s}, nil
}

func fraction(s string, f float64) (RenewBefore, error) {
	if !(f > 0 && f < 1) {
		return RenewBefore{}, fmt.Errorf("%w: lifetime fraction %q must be between 0 and 1, exclusive", ErrRenewBefore, s)
	}
	return RenewBefore{Fraction: f, text: s}, nil
}

// IsZero reports whether no override is set.
func (r RenewBefore) IsZero() bool { return r.Duration == 0 && r.Fraction == 0 }

// String returns the value as written in the configuration, or a canonical
// form when it was built in Go.
func (r RenewBefore) String() string {
	switch {
	case r.text != "":
		return r.text
	case r.Duration != 0:
		return r.Duration.String()
	case r.Fraction != 0:
		return strconv.FormatFloat(r.Fraction, 'g', -1, 64)
	}
	return ""
}

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParseRenewBefore].
func (r *RenewBefore) UnmarshalText(b []byte) error {
	v, err := ParseRenewBefore(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText implements [encoding.TextMarshaler]; the result parses back to
// the same Duration or Fraction.
func (r RenewBefore) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
