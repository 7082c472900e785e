package renewal

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestExplain(t *testing.T) {
	nb := time.Date(2026, 10, 3, 0, 0, 0, 0, time.UTC)
	c := withARI(cert(nb, 90*day))
	win := Window{Start: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), End: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	now := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

	var ari State
	if err := ari.RecordARI(ARIResponse{Window: win, ExplanationURL: "https://ca.example/incident/42", RetryAfter: 3 * time.Hour}, now, seeded(5)); err != nil {
		t.Fatal(err)
	}
	chosen := fmtTime(ari.ARIChosen)

	failingNow := win.End // the ARI time has passed, but the last attempts failed
	failing := ari
	failing.RecordOrder(failingNow.Add(-2 * time.Hour))
	failing.RecordOrder(failingNow.Add(-time.Hour))
	caa := Failure{Err: "finalizing order: CAA forbids issuance", ProblemType: "urn:ietf:params:acme:error:caa"}
	failing.RecordFailure(caa, failingNow.Add(-time.Hour), seeded(1))
	failing.RecordFailure(caa, failingNow.Add(-50*time.Minute), seeded(1))
	failing.RecordFailure(caa, failingNow.Add(-5*time.Minute), seeded(1))
	retry := fmtTime(failing.RetryAt)

	var guarded State
	for i := range 5 {
		guarded.RecordOrder(now.Add(time.Duration(i-10) * time.Hour))
	}

	var noARI State
	noARI.RecordARIError(errors.New("fetching renewal info: 503 Service Unavailable"), 0, now)

	tests := []struct {
		name  string
		state State
		cert  Certificate
		now   time.Time
		line  string // String()
		facts []string
	}{
		{
			name: "ARI", state: ari, cert: c, now: now,
			line: "renew at " + chosen + ": ARI window 2026-12-01 10:00 – 2026-12-02 10:00 UTC, chosen time " + chosen,
			facts: []string{
				"renewal:         " + chosen + " (in 1",
				"reason:          ARI window 2026-12-01 10:00 – 2026-12-02 10:00 UTC, chosen time " + chosen,
				"certificate:     valid 2026-10-03 00:00 – 2026-12-31 23:59 UTC (90-day lifetime)",
				"lifetime rule:   2/3 of 90-day lifetime → 2026-12-02 00:00 UTC",
				"ARI window:      2026-12-01 10:00 – 2026-12-02 10:00 UTC",
				"ARI explanation: https://ca.example/incident/42",
				"ARI chosen time: " + chosen,
				"ARI next fetch:  2026-11-20 11:00 UTC",
				"reissue guard:   0 of 5 orders in the last 24h",
				"next check:      2026-11-20 11:00 UTC",
			},
		},
		{
			name: "failing", state: failing, cert: c, now: failingNow,
			line: "renew at " + retry + ": backing off after 3 consecutive failures until " + retry,
			facts: []string{
				"reason: backing off after 3 consecutive failures until " + retry,
				"ARI window: 2026-12-01 10:00 – 2026-12-02 10:00 UTC",
				"last error: finalizing order: CAA forbids issuance (urn:ietf:params:acme:error:caa) at 2026-12-02 09:55 UTC",
				"backoff: backing off after 3 consecutive failures until " + retry,
				"reissue guard: 2 of 5 orders in the last 24h",
				"next check:      now, to fetch renewal information",
			},
		},
		{
			name: "guard", state: guarded, cert: cert(nb.Add(-90*day), 90*day), now: now,
			line: "renew at 2026-11-20 22:00 UTC: reissue guard: 5 orders in the last 24h (limit 5), next order allowed at 2026-11-20 22:00 UTC",
			facts: []string{
				"ARI:           not offered by the CA; the lifetime rule applies",
				"reissue guard: 5 orders in the last 24h (limit 5), next order allowed at 2026-11-20 22:00 UTC",
				"certificate:   valid 2026-07-05 00:00 – 2026-10-02 23:59 UTC (90-day lifetime)",
			},
		},
		{
			name: "ARI failed", state: noARI, cert: c, now: now,
			line: "renew at 2026-12-02 00:00 UTC: 2/3 of 90-day lifetime",
			facts: []string{
				"ARI:             no usable window yet; the lifetime rule applies",
				"ARI error:       fetching renewal info: 503 Service Unavailable",
				"ARI next fetch:  2026-11-20 09:00 UTC",
			},
		},
		{
			name: "revoked and rate limited", cert: c, now: now,
			state: State{Revoked: true, RevokedAt: now.Add(-time.Hour), Failures: 1, LastError: "too many certificates",
				LastProblemType: ProblemRateLimited, LastFailure: now.Add(-time.Minute), RetryAt: now.Add(2 * time.Hour), ARINextFetch: now.Add(time.Hour)},
			line: "renew at 2026-11-20 10:00 UTC: rate limited by the CA, waiting after 1 consecutive failure until 2026-11-20 10:00 UTC",
			facts: []string{
				"renewal: 2026-11-20 10:00 UTC (in 2h)",
				"revoked:         the certificate was revoked at 2026-11-20 07:00 UTC",
				"last error:      too many certificates (urn:ietf:params:acme:error:rateLimited) at 2026-11-20 07:59 UTC",
				"next check:      2026-11-20 09:00 UTC",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Policy{}.Decide(tt.state, tt.cert, tt.now)
			if got := d.String(); got != tt.line {
				t.Errorf("String() = %q, want %q", got, tt.line)
			}
			// Labels are padded to a common width; compare with single spaces.
			ex := d.Explain()
			squeezed := squeeze(ex)
			for _, f := range tt.facts {
				if !strings.Contains(squeezed, squeeze(f)) {
					t.Errorf("Explain() lacks %q:\n%s", f, ex)
				}
			}
		})
	}
}

// squeeze collapses runs of spaces, line by line.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestDecisionStringDue(t *testing.T) {
	d := Policy{}.Decide(State{}, Certificate{}, t0)
	if got, want := d.String(), "due now: no certificate issued yet"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestFormatting(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{fmtDur(3*day + 4*time.Hour + 5*time.Minute + 20*time.Second), "3d4h5m"},
		{fmtDur(90 * time.Minute), "1h30m"},
		{fmtDur(29 * time.Second), "under a minute"},
		{fmtDur(-2 * time.Hour), "-2h"},
		{fmtWindow(24 * time.Hour), "24h"},
		{fmtWindow(90 * time.Minute), "1h30m"},
		{fmtLife(90*day - time.Second), "90-day"},
		{fmtLife(7*day + 12*time.Hour), "7d12h"},
		{fmtTime(time.Date(2026, 12, 1, 17, 23, 59, 0, time.FixedZone("CET", 3600))), "2026-12-01 16:23 UTC"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestGlobalRandomness checks the nil *rand.Rand path (the global source)
// stays within the same bounds as a seeded one.
func TestGlobalRandomness(t *testing.T) {
	w := Window{Start: t0, End: t0.Add(time.Hour)}
	for range 100 {
		var st State
		if err := st.RecordARI(ARIResponse{Window: w}, t0, nil); err != nil || !w.contains(st.ARIChosen) {
			t.Fatalf("RecordARI with nil rng: chosen %v, err %v", st.ARIChosen, err)
		}
		st.RecordFailure(Failure{Err: "x"}, t0, nil)
		if wait := st.RetryAt.Sub(t0); wait < 4*time.Minute || wait > 6*time.Minute {
			t.Fatalf("RecordFailure with nil rng: wait %v, want 5m ± 20%%", wait)
		}
	}
}
