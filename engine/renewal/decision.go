package renewal

import (
	"fmt"
	"strings"
	"time"
)

// Decision is the outcome of [Policy.Decide] for one lineage.
type Decision struct {
	// Due reports whether an order should be placed now.
	Due bool
	// At is when the lineage is (or became) due, after backoff and guard.
	At time.Time
	// Reason says in one line what determined At.
	Reason string
	// NextCheck is when a daemon should decide again: now when due or when
	// renewal information should be fetched, else the earlier of At and the
	// next ARI fetch.
	NextCheck time.Time
	// FetchARI reports whether renewal information should be fetched (RFC
	// 9773 §4) before acting on this decision: the CA offers it and the
	// Retry-After of the last fetch has passed, or none was made.
	FetchARI bool

	now   time.Time
	facts []fact
}

// fact is one line of Explain. Its text may be made only when asked for
// (lazy): `acmehook list` decides for every certificate and shows none of
// them, and formatting their times was a tenth of deciding.
type fact struct {
	label, text string
	lazy        func() string
}

func (f fact) line() [2]string {
	if f.lazy != nil {
		return [2]string{f.label, f.lazy()}
	}
	return [2]string{f.label, f.text}
}

func (d *Decision) fact(label, text string) {
	d.facts = append(d.facts, fact{label: label, text: text})
}

// factf records a fact whose text is made by text when it is shown.
func (d *Decision) factf(label string, text func() string) {
	d.facts = append(d.facts, fact{label: label, lazy: text})
}

// String is the decision in one line, as `acmehook list` shows it.
func (d Decision) String() string {
	if d.Due {
		return "due now: " + d.Reason
	}
	return fmt.Sprintf("renew at %s: %s", fmtTime(d.At), d.Reason)
}

// Fact is one fact behind a decision, as a line of Explain: a label
// ("ARI window", "reissue guard" ...) and its text.
type Fact struct {
	Label string
	Text  string
}

// Facts returns the facts behind the decision in the order Explain prints
// them, between its "reason" and "next check" lines.
func (d Decision) Facts() []Fact {
	out := make([]Fact, len(d.facts))
	for i, f := range d.facts {
		l := f.line()
		out[i] = Fact{Label: l[0], Text: l[1]}
	}
	return out
}

// Explain is the decision with every fact behind it, one per line, as
// `acmehook explain NAME` prints it: the certificate's validity, the
// lifetime rule, the ARI window and chosen time, revocation, the last error
// and backoff, the reissue guard, and when to check again.
func (d Decision) Explain() string {
	when := "due now"
	if d.Due && d.At.Before(d.now) {
		when = fmt.Sprintf("due now (since %s)", fmtTime(d.At))
	}
	if !d.Due {
		when = fmt.Sprintf("%s (in %s)", fmtTime(d.At), fmtDur(d.At.Sub(d.now)))
	}
	next := fmtTime(d.NextCheck)
	if d.FetchARI {
		next = "now, to fetch renewal information"
	}
	lines := [][2]string{{"renewal", when}, {"reason", d.Reason}}
	for _, f := range d.facts {
		lines = append(lines, f.line())
	}
	lines = append(lines, [2]string{"next check", next})
	width := 0
	for _, l := range lines {
		width = max(width, len(l[0]))
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s %s\n", width+1, l[0]+":", l[1])
	}
	return b.String()
}

const timeLayout = "2006-01-02 15:04"

// fmtTime is t in UTC to the minute.
func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) + " UTC" }

// fmtDur is d truncated to the minute (as fmtTime truncates times) in days,
// hours and minutes ("3d4h5m").
func fmtDur(d time.Duration) string {
	d = d.Truncate(time.Minute)
	if d < time.Minute && d > -time.Minute {
		return "under a minute"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	day := 24 * time.Hour
	for _, u := range []struct {
		unit time.Duration
		sfx  string
	}{{day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.sfx)
			d -= n * u.unit
		}
	}
	return b.String()
}

// fmtWindow is a guard window in hours ("24h") when whole, else as fmtDur.
func fmtWindow(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmtDur(d)
}

// fmtLife is a lifetime as "90-day" when it is a whole number of days to
// the minute, else as fmtDur.
func fmtLife(d time.Duration) string {
	r := d.Round(time.Minute)
	if r%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d-day", r/(24*time.Hour))
	}
	return fmtDur(d)
}
