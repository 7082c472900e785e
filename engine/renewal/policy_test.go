package renewal

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// cert is a certificate issued at nb for life, with NotAfter inclusive as
// RFC 5280 and the CAs have it (a 90-day certificate ends one second before
// day 90).
func cert(nb time.Time, life time.Duration) Certificate {
	return Certificate{NotBefore: nb, NotAfter: nb.Add(life - time.Second)}
}

func withARI(c Certificate) Certificate { c.ARI = true; return c }

func TestDecide(t *testing.T) {
	nb := t0
	c90 := cert(nb, 90*day)
	win := Window{Start: nb.Add(59 * day), End: nb.Add(61 * day)}
	chosen := nb.Add(60*day + 7*time.Hour + 23*time.Minute)
	ari := State{ARIWindow: win, ARIChosen: chosen, ARINextFetch: nb.Add(day + 6*time.Hour)}
	pastWin := Window{Start: nb.Add(-2 * day), End: nb.Add(-day)}
	orders := func(ts ...time.Duration) []time.Time {
		var out []time.Time
		for _, d := range ts {
			out = append(out, nb.Add(d))
		}
		return out
	}

	tests := []struct {
		name      string
		policy    Policy
		state     State
		cert      Certificate
		now       time.Time
		wantDue   bool
		wantAt    time.Time
		wantNext  time.Time
		wantFetch bool
		reason    string
	}{
		{
			name: "2/3 of 90 days is day 60", cert: c90, now: nb.Add(day),
			wantAt: nb.Add(60 * day), wantNext: nb.Add(60 * day), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "one second before day 60", cert: c90, now: nb.Add(60*day - time.Second),
			wantAt: nb.Add(60 * day), wantNext: nb.Add(60 * day), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "day 60 is due", cert: c90, now: nb.Add(60 * day),
			wantDue: true, wantAt: nb.Add(60 * day), wantNext: nb.Add(60 * day), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "1/2 of 6 days is day 3", cert: cert(nb, 6*day), now: nb,
			wantAt: nb.Add(3 * day), wantNext: nb.Add(3 * day), reason: "1/2 of 6-day lifetime (under 10 days)",
		},
		{
			name: "sub-day: 1/2 of 7d12h is 3d18h", cert: cert(nb, 7*day+12*time.Hour), now: nb,
			wantAt: nb.Add(3*day + 18*time.Hour), wantNext: nb.Add(3*day + 18*time.Hour), reason: "1/2 of 7d12h lifetime",
		},
		{
			name: "sub-day: 2/3 of 10 days is 6d16h", cert: cert(nb, 10*day), now: nb,
			wantAt: nb.Add(6*day + 16*time.Hour), wantNext: nb.Add(6*day + 16*time.Hour), reason: "2/3 of 10-day lifetime",
		},
		{
			name: "sub-day: 2/3 of 45d1h is 30d40m", cert: cert(nb, 45*day+time.Hour), now: nb,
			wantAt: nb.Add(30*day + 40*time.Minute), wantNext: nb.Add(30*day + 40*time.Minute), reason: "2/3 of 45d1h lifetime",
		},
		{
			name: "renew_before as a duration", policy: Policy{RenewBefore: RenewBefore{Duration: 720 * time.Hour}}, cert: c90, now: nb,
			wantAt: c90.NotAfter.Add(-720 * time.Hour), wantNext: c90.NotAfter.Add(-720 * time.Hour), reason: "renew_before 720h0m0s: 30d before expiry",
		},
		{
			name: "renew_before as a fraction", policy: Policy{RenewBefore: RenewBefore{Fraction: 0.25}}, cert: c90, now: nb,
			wantAt: nb.Add(67*day + 12*time.Hour), wantNext: nb.Add(67*day + 12*time.Hour), reason: "when 22d12h of the 90-day lifetime remains",
		},
		{
			name: "renew_before longer than the lifetime is ignored", policy: Policy{RenewBefore: RenewBefore{Duration: 720 * time.Hour}}, cert: cert(nb, 6*day), now: nb,
			wantAt: nb.Add(3 * day), wantNext: nb.Add(3 * day), reason: "renew_before 720h0m0s ignored",
		},
		{
			name: "ARI chosen time ahead", state: ari, cert: withARI(c90), now: nb.Add(day),
			wantAt: chosen, wantNext: ari.ARINextFetch,
			reason: "ARI window 2027-01-29 00:00 – 2027-01-31 00:00 UTC, chosen time 2027-01-30 07:23 UTC",
		},
		{
			name: "ARI chosen time ahead, next fetch later", state: ari, cert: withARI(c90), now: nb.Add(day),
			wantAt: chosen, wantNext: ari.ARINextFetch, reason: "chosen time 2027-01-30 07:23 UTC",
		},
		{
			name: "ARI chosen time passed inside the window", state: ari, cert: withARI(c90), now: chosen.Add(time.Minute),
			wantDue: true, wantAt: chosen, wantNext: chosen.Add(time.Minute), wantFetch: true, reason: "ARI window",
		},
		{
			name: "ARI window in the past", state: State{ARIWindow: pastWin, ARIChosen: pastWin.Start.Add(time.Hour), ARINextFetch: nb.Add(time.Hour)},
			cert: withARI(cert(nb.Add(-30*day), 90*day)), now: nb,
			wantDue: true, wantAt: pastWin.Start.Add(time.Hour), wantNext: nb, reason: "ARI window",
		},
		{
			name: "ARI window kept when the CA stops offering ARI", state: ari, cert: c90, now: nb,
			wantAt: chosen, wantNext: chosen, reason: "ARI window",
		},
		{
			name: "ARI time after expiry is ignored", state: State{ARIWindow: Window{Start: nb.Add(100 * day), End: nb.Add(101 * day)}, ARIChosen: nb.Add(100 * day)},
			cert: c90, now: nb,
			wantAt: nb.Add(60 * day), wantNext: nb.Add(60 * day), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "ARI chosen time outside the window falls back to its start", state: State{ARIWindow: win, ARIChosen: nb.Add(80 * day)},
			cert: c90, now: nb,
			wantAt: win.Start, wantNext: win.Start, reason: "chosen time 2027-01-29 00:00 UTC",
		},
		{
			name: "ARI supported, never fetched", cert: withARI(c90), now: nb,
			wantAt: nb.Add(60 * day), wantNext: nb, wantFetch: true, reason: "2/3 of 90-day lifetime",
		},
		{
			name: "ARI fetch failed: lifetime rule, retry later", state: State{ARIError: "fetching renewal info: 500", ARINextFetch: nb.Add(time.Hour)},
			cert: withARI(c90), now: nb,
			wantAt: nb.Add(60 * day), wantNext: nb.Add(time.Hour), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "revoked", state: State{Revoked: true, RevokedAt: nb.Add(day)}, cert: c90, now: nb.Add(2 * day),
			wantDue: true, wantAt: nb.Add(2 * day), wantNext: nb.Add(2 * day), reason: "certificate was revoked at 2026-12-02 00:00 UTC",
		},
		{
			name: "revoked, time unknown", state: State{Revoked: true}, cert: c90, now: nb,
			wantDue: true, wantAt: nb, wantNext: nb, reason: "certificate was revoked",
		},
		{
			name: "revoked beats a future ARI window", state: State{ARIWindow: win, ARIChosen: chosen, Revoked: true, RevokedAt: nb.Add(day)}, cert: c90, now: nb.Add(2 * day),
			wantDue: true, wantAt: nb.Add(2 * day), wantNext: nb.Add(2 * day), reason: "revoked",
		},
		{
			name: "expired", cert: c90, now: nb.Add(100 * day),
			wantDue: true, wantAt: nb.Add(60 * day), wantNext: nb.Add(100 * day), reason: "certificate expired at 2027-02-28 23:59 UTC",
		},
		{
			name: "no certificate yet", now: nb,
			wantDue: true, wantAt: nb, wantNext: nb, reason: "no certificate issued yet",
		},
		{
			name: "no certificate yet, ARI offered: nothing to fetch", cert: Certificate{ARI: true}, now: nb,
			wantDue: true, wantAt: nb, wantNext: nb, reason: "no certificate issued yet",
		},
		{
			name: "malformed validity", cert: Certificate{NotBefore: nb, NotAfter: nb.Add(-time.Hour)}, now: nb,
			wantDue: true, wantAt: nb, wantNext: nb, reason: "certificate validity is malformed",
		},
		{
			name: "backoff postpones a due renewal", state: State{Failures: 3, LastError: "timeout", LastFailure: nb.Add(60 * day), RetryAt: nb.Add(60*day + 20*time.Minute)},
			cert: c90, now: nb.Add(60*day + 10*time.Minute),
			wantAt: nb.Add(60*day + 20*time.Minute), wantNext: nb.Add(60*day + 20*time.Minute),
			reason: "backing off after 3 consecutive failures until 2027-01-30 00:20 UTC",
		},
		{
			name: "backoff over", state: State{Failures: 3, LastError: "timeout", LastFailure: nb.Add(60 * day), RetryAt: nb.Add(60*day + 20*time.Minute)},
			cert: c90, now: nb.Add(60*day + 20*time.Minute),
			wantDue: true, wantAt: nb.Add(60*day + 20*time.Minute), wantNext: nb.Add(60*day + 20*time.Minute),
			reason: "retrying after 3 consecutive failures, backoff ended at 2027-01-30 00:20 UTC",
		},
		{
			name: "backoff earlier than the schedule changes nothing", state: State{Failures: 1, RetryAt: nb.Add(time.Hour)}, cert: c90, now: nb,
			wantAt: nb.Add(60 * day), wantNext: nb.Add(60 * day), reason: "2/3 of 90-day lifetime",
		},
		{
			name: "rate limit over", state: State{Failures: 1, LastProblemType: ProblemRateLimited, RetryAt: nb.Add(3 * time.Hour)}, cert: c90, now: nb.Add(61 * day),
			wantAt: nb.Add(60 * day), wantNext: nb.Add(61 * day), wantDue: true, reason: "2/3",
		},
		{
			name: "rate limited and waiting", state: State{Failures: 1, LastProblemType: ProblemRateLimited, RetryAt: nb.Add(60*day + 3*time.Hour)}, cert: c90, now: nb.Add(60 * day),
			wantAt: nb.Add(60*day + 3*time.Hour), wantNext: nb.Add(60*day + 3*time.Hour), reason: "rate limited by the CA",
		},
		{
			name: "guard holds a due renewal", state: State{Orders: orders(-20*time.Hour, -10*time.Hour, -3*time.Hour, -2*time.Hour, -time.Hour)},
			now: nb, wantAt: nb.Add(4 * time.Hour), wantNext: nb.Add(4 * time.Hour),
			reason: "reissue guard: 5 orders in the last 24h (limit 5), next order allowed at 2026-12-01 04:00 UTC",
		},
		{
			name: "guard under its limit", state: State{Orders: orders(-25*time.Hour, -10*time.Hour, -3*time.Hour, -2*time.Hour, -time.Hour)},
			now: nb, wantDue: true, wantAt: nb, wantNext: nb, reason: "no certificate issued yet",
		},
		{
			name: "guard counts orders stamped in the future as now", state: State{Orders: orders(-time.Hour, 48*time.Hour)},
			policy: Policy{MaxOrders: 2, MaxOrdersWindow: 6 * time.Hour},
			now:    nb, wantAt: nb.Add(5 * time.Hour), wantNext: nb.Add(5 * time.Hour), reason: "reissue guard: 2 orders in the last 6h (limit 2)",
		},
		{
			name: "guard beyond a backoff", state: State{Failures: 2, RetryAt: nb.Add(time.Hour), Orders: orders(-time.Hour, -30*time.Minute)},
			policy: Policy{MaxOrders: 2, MaxOrdersWindow: 3 * time.Hour},
			now:    nb, wantAt: nb.Add(2 * time.Hour), wantNext: nb.Add(2 * time.Hour), reason: "reissue guard",
		},
		{
			name: "next ARI fetch before the renewal time", state: State{ARINextFetch: nb.Add(6 * time.Hour)}, cert: withARI(c90), now: nb,
			wantAt: nb.Add(60 * day), wantNext: nb.Add(6 * time.Hour), reason: "2/3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.policy.Decide(tt.state, tt.cert, tt.now)
			if d.Due != tt.wantDue || !d.At.Equal(tt.wantAt) || !d.NextCheck.Equal(tt.wantNext) || d.FetchARI != tt.wantFetch {
				t.Errorf("Decide = {Due %v At %v NextCheck %v FetchARI %v}, want {%v %v %v %v}\n%s",
					d.Due, d.At, d.NextCheck, d.FetchARI, tt.wantDue, tt.wantAt, tt.wantNext, tt.wantFetch, d.Explain())
			}
			if ex := d.Explain(); tt.wantDue && d.At.Before(tt.now) && !strings.Contains(ex, "due now (since "+fmtTime(d.At)+")") {
				t.Errorf("Explain() lacks since when the lineage is due:\n%s", ex)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Decide reason = %q, want it to contain %q", d.Reason, tt.reason)
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		want   []string
	}{
		{name: "zero is the default"},
		{name: "custom", policy: Policy{RenewBefore: RenewBefore{Fraction: 0.5}, MaxOrders: 10, MaxOrdersWindow: 7 * day}},
		{name: "too many orders", policy: Policy{MaxOrders: 1000}, want: []string{"max_orders 1000"}},
		{name: "negative", policy: Policy{MaxOrders: -1, MaxOrdersWindow: -time.Hour}, want: []string{"max_orders -1", "max_orders_window -1h0m0s"}},
		{name: "window too long", policy: Policy{MaxOrdersWindow: 30 * day}, want: []string{"max_orders_window 720h0m0s"}},
		{name: "both renew_before forms", policy: Policy{RenewBefore: RenewBefore{Duration: time.Hour, Fraction: 0.5}}, want: []string{"renew_before"}},
		{name: "fraction of 1", policy: Policy{RenewBefore: RenewBefore{Fraction: 1}}, want: []string{"renew_before"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("Validate() = %v, want ErrPolicy", err)
			}
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				if pe := (*PolicyError)(nil); !errors.As(e, &pe) || pe.Key == "" {
					t.Errorf("Validate() joined %v, want a *PolicyError naming its key", e)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}
