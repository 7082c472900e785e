package renewal

import (
	"strings"
	"testing"
	"time"
)

// TestGuardHoldsAgainstMisbehavingSchedule drives a lineage through 100
// decisions, 30 minutes of real time apart, where the schedule says "due"
// almost every time, and places an order whenever Decide says so. However
// the schedule or the clock misbehaves, no real 24 hours (or the configured
// window) may see more orders than the limit, and every refusal must name
// the guard.
//
// A clock that jumps forward is not simulated: it is indistinguishable from
// time passing, and lets one more window's worth of orders through (the
// orders it stamps in the future then hold the guard once the clock is
// corrected; TestDecide covers that).
func TestGuardHoldsAgainstMisbehavingSchedule(t *testing.T) {
	pastWindow := func(st *State, now time.Time) {
		if st.ARIWindow.IsZero() {
			_ = st.RecordARI(ARIResponse{Window: Window{Start: now.Add(-2 * day), End: now.Add(-day)}}, now, seeded(1))
		}
	}
	revoked := func(st *State, now time.Time) {
		if !st.Revoked {
			st.RecordRevoked(now)
		}
	}
	tests := []struct {
		name     string
		policy   Policy
		lifetime time.Duration
		// poison makes the schedule misbehave before each decision.
		poison func(st *State, now time.Time)
		// clock is the wall clock's offset from real time at step i.
		clock func(i int) time.Duration
	}{
		{name: "ARI window in the past forever", lifetime: 90 * day, poison: pastWindow},
		{name: "ARI window in the past, 2 per 6h", policy: Policy{MaxOrders: 2, MaxOrdersWindow: 6 * time.Hour}, lifetime: 90 * day, poison: pastWindow},
		{name: "revoked forever", lifetime: 90 * day, poison: revoked},
		{name: "CA issues 1-hour certificates", lifetime: time.Hour},
		{name: "CA issues 2-second certificates", lifetime: 2 * time.Second},
		{name: "revoked forever, clock jumps backwards", lifetime: 90 * day, poison: revoked, clock: func(i int) time.Duration {
			switch {
			case i < 40:
				return 0
			case i < 70:
				return -12 * time.Hour
			}
			return -36 * time.Hour
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, window := tt.policy.guard()
			var st State
			real := t0
			c := withARI(cert(real.Add(-80*day), tt.lifetime))
			var orders []time.Time // in real time
			for i := range 100 {
				now := real
				if tt.clock != nil {
					now = now.Add(tt.clock(i))
				}
				if tt.poison != nil {
					tt.poison(&st, now)
				}
				d := tt.policy.Decide(st, c, now)
				if d.Due {
					st.RecordOrder(now)
					orders = append(orders, real)
					c = withARI(cert(now, tt.lifetime))
					st.RecordSuccess(now, c)
				} else if !strings.Contains(d.Reason, "reissue guard") {
					t.Fatalf("step %d at %v: refused for %q, want the reissue guard", i, now, d.Reason)
				}
				real = real.Add(30 * time.Minute)
			}
			if len(orders) < limit {
				t.Fatalf("%d orders in 100 steps, want at least %d: the guard must not block for good", len(orders), limit)
			}
			// Real time (the simulation's) is what the CA sees.
			for i, o := range orders {
				n := 0
				for _, p := range orders[:i+1] {
					if o.Sub(p) < window {
						n++
					}
				}
				if n > limit {
					t.Fatalf("%d orders in the %v before %v, want at most %d", n, window, o, limit)
				}
			}
		})
	}
}

// TestGuardWithoutPoison shows the simulation itself renews: a lineage on a
// sane schedule orders once per cycle and never meets the guard.
func TestGuardWithoutPoison(t *testing.T) {
	var (
		p      Policy
		st     State
		now    = t0
		c      = cert(t0.Add(-5*day), 6*day)
		orders int
	)
	for range 100 {
		d := p.Decide(st, c, now)
		if strings.Contains(d.Reason, "reissue guard") {
			t.Fatalf("guard met on a sane schedule at %v: %s", now, d.Reason)
		}
		if d.Due {
			st.RecordOrder(now)
			c = cert(now, 6*day)
			st.RecordSuccess(now, c)
			orders++
		}
		now = d.NextCheck
		if !d.Due {
			continue
		}
		now = now.Add(time.Minute)
	}
	// 100 decisions alternate due / not due: 50 renewals, one every 3 days.
	if orders != 50 {
		t.Errorf("%d orders, want 50", orders)
	}
}
