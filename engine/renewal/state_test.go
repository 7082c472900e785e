package renewal

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const day = 24 * time.Hour

// t0 is the fixed "now" the tests start from.
var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0)) }

func TestRecordARIKeepsChosenTime(t *testing.T) {
	w1 := Window{Start: t0.Add(10 * time.Hour), End: t0.Add(34 * time.Hour)}
	w2 := Window{Start: t0.Add(2 * day), End: t0.Add(3 * day)}
	rng := seeded(1)
	var st State

	steps := []struct {
		name   string
		window Window
		repick bool
	}{
		{"first window", w1, true},
		{"same window", w1, false},
		{"same instants in another zone", Window{Start: w1.Start.In(time.FixedZone("X", 3600)), End: w1.End.In(time.FixedZone("X", 3600))}, false},
		{"again", w1, false},
		{"window moved", w2, true},
		{"moved window repeated", w2, false},
	}
	var prev time.Time
	now := t0
	for _, s := range steps {
		if err := st.RecordARI(ARIResponse{Window: s.window, ExplanationURL: "https://ca.example/why"}, now, rng); err != nil {
			t.Fatalf("%s: RecordARI = %v", s.name, err)
		}
		if !s.window.contains(st.ARIChosen) {
			t.Fatalf("%s: chosen %v outside window %v", s.name, st.ARIChosen, s.window)
		}
		if !s.repick && !st.ARIChosen.Equal(prev) {
			t.Errorf("%s: chosen time moved from %v to %v", s.name, prev, st.ARIChosen)
		}
		prev = st.ARIChosen
		now = now.Add(time.Hour)
	}
	if st.ARIExplanationURL != "https://ca.example/why" {
		t.Errorf("ARIExplanationURL = %q", st.ARIExplanationURL)
	}
}

// TestRecordARIUniform checks that the chosen time is spread over the whole
// window: over 2000 seeded picks every tenth of the window gets 10% ± 3%.
func TestRecordARIUniform(t *testing.T) {
	w := Window{Start: t0, End: t0.Add(day)}
	rng := seeded(7)
	var buckets [10]int
	const n = 2000
	for range n {
		var st State
		if err := st.RecordARI(ARIResponse{Window: w}, t0, rng); err != nil {
			t.Fatal(err)
		}
		buckets[int(st.ARIChosen.Sub(w.Start)*10/day)]++
	}
	for i, c := range buckets {
		if c < n/10*7/10 || c > n/10*13/10 {
			t.Errorf("bucket %d has %d of %d picks, want about %d", i, c, n, n/10)
		}
	}
}

func TestRecordARIRetryAfter(t *testing.T) {
	w := Window{Start: t0.Add(day), End: t0.Add(2 * day)}
	tests := []struct {
		name       string
		window     Window
		retryAfter time.Duration
		want       time.Duration
	}{
		{"absent", w, 0, DefaultARIRetry},
		{"honoured", w, 3 * time.Hour, 3 * time.Hour},
		{"too short", w, time.Second, MinARIRetry},
		{"at minimum", w, time.Minute, time.Minute},
		{"too long", w, 30 * day, MaxARIRetry},
		{"at maximum", w, 24 * time.Hour, 24 * time.Hour},
		{"malformed, absent", Window{}, 0, ARIErrorRetry},
		{"malformed, honoured", Window{}, 2 * time.Hour, 2 * time.Hour},
		{"malformed, too short", Window{}, time.Second, MinARIRetry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st State
			_ = st.RecordARI(ARIResponse{Window: tt.window, RetryAfter: tt.retryAfter}, t0, seeded(1))
			if got := st.ARINextFetch.Sub(t0); got != tt.want {
				t.Errorf("RecordARI(Retry-After %v): next fetch in %v, want %v", tt.retryAfter, got, tt.want)
			}
		})
	}
}

func TestRecordARIMalformed(t *testing.T) {
	good := Window{Start: t0.Add(day), End: t0.Add(2 * day)}
	tests := []struct {
		name   string
		window Window
	}{
		{"end before start", Window{Start: good.End, End: good.Start}},
		{"empty", Window{Start: good.Start, End: good.Start}},
		{"no start", Window{End: good.End}},
		{"no end", Window{Start: good.Start}},
		{"zero", Window{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fresh State
			err := fresh.RecordARI(ARIResponse{Window: tt.window}, t0, seeded(1))
			if !errors.Is(err, ErrMalformedWindow) {
				t.Fatalf("RecordARI(%+v) = %v, want ErrMalformedWindow", tt.window, err)
			}
			if !fresh.ARIWindow.IsZero() || !fresh.ARIChosen.IsZero() || fresh.ARIError == "" {
				t.Errorf("after a malformed window: window %v, chosen %v, error %q; want none, none, the problem", fresh.ARIWindow, fresh.ARIChosen, fresh.ARIError)
			}

			// A malformed response does not discard the last good window.
			var st State
			if err := st.RecordARI(ARIResponse{Window: good}, t0, seeded(1)); err != nil {
				t.Fatal(err)
			}
			chosen := st.ARIChosen
			_ = st.RecordARI(ARIResponse{Window: tt.window}, t0.Add(time.Hour), seeded(2))
			if !st.ARIWindow.Equal(good) || !st.ARIChosen.Equal(chosen) {
				t.Errorf("good window then malformed: window %v chosen %v, want %v and %v", st.ARIWindow, st.ARIChosen, good, chosen)
			}
		})
	}
}

func TestRecordARIError(t *testing.T) {
	good := Window{Start: t0.Add(day), End: t0.Add(2 * day)}
	var st State
	if err := st.RecordARI(ARIResponse{Window: good}, t0, seeded(1)); err != nil {
		t.Fatal(err)
	}
	st.RecordARIError(errors.New("fetching renewal info: 503"), 0, t0.Add(time.Hour))
	if st.ARIError != "fetching renewal info: 503" || !st.ARINextFetch.Equal(t0.Add(time.Hour+ARIErrorRetry)) || !st.ARIWindow.Equal(good) {
		t.Errorf("after RecordARIError: %+v", st)
	}
	if err := st.RecordARI(ARIResponse{Window: good}, t0.Add(2*time.Hour), seeded(1)); err != nil || st.ARIError != "" {
		t.Errorf("a good fetch after an error: err %v, ARIError %q, want both cleared", err, st.ARIError)
	}
}

func TestRecordFailureBackoff(t *testing.T) {
	// Without jitter the waits are 5m, 10m, 20m, ... capped at 6h.
	nominal := []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute,
		80 * time.Minute, 160 * time.Minute, 320 * time.Minute, 6 * time.Hour, 6 * time.Hour, 6 * time.Hour}
	for seed := range uint64(50) {
		rng := seeded(seed)
		var st State
		now := t0
		for i, want := range nominal {
			st.RecordFailure(Failure{Err: "boom"}, now, rng)
			got := st.RetryAt.Sub(now)
			lo := time.Duration(float64(want) * (1 - BackoffJitter))
			hi := time.Duration(float64(want) * (1 + BackoffJitter))
			if got < lo || got > hi {
				t.Fatalf("seed %d: after %d failures wait %v, want in [%v, %v]", seed, i+1, got, lo, hi)
			}
			if st.Failures != i+1 || !st.LastFailure.Equal(now) {
				t.Fatalf("seed %d: Failures %d LastFailure %v, want %d %v", seed, st.Failures, st.LastFailure, i+1, now)
			}
			now = st.RetryAt
		}
	}
	// Jitter actually varies.
	seen := map[time.Duration]bool{}
	for seed := range uint64(10) {
		var st State
		st.RecordFailure(Failure{Err: "boom"}, t0, seeded(seed))
		seen[st.RetryAt.Sub(t0)] = true
	}
	if len(seen) < 5 {
		t.Errorf("10 seeds gave %d distinct first waits, want jitter", len(seen))
	}
}

func TestRecordFailureRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		failures   int
		retryAfter time.Duration
		wantMin    time.Duration
		wantMax    time.Duration
	}{
		{"rate limited, longer than backoff", 0, 3 * time.Hour, 3 * time.Hour, 3 * time.Hour},
		{"rate limited, shorter than backoff", 9, 10 * time.Minute, 6 * time.Hour * 8 / 10, 6 * time.Hour * 12 / 10},
		{"rate limited, absurd", 0, 365 * day, MaxFailureRetryAfter, MaxFailureRetryAfter},
		{"no retry-after", 0, 0, 4 * time.Minute, 6 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := State{Failures: tt.failures}
			st.RecordFailure(Failure{Err: "too many certificates", ProblemType: ProblemRateLimited, RetryAfter: tt.retryAfter}, t0, seeded(3))
			if got := st.RetryAt.Sub(t0); got < tt.wantMin || got > tt.wantMax {
				t.Errorf("wait %v, want in [%v, %v]", got, tt.wantMin, tt.wantMax)
			}
			if st.LastProblemType != ProblemRateLimited || st.LastError != "too many certificates" {
				t.Errorf("LastProblemType %q LastError %q", st.LastProblemType, st.LastError)
			}
		})
	}
}

func TestRecordSuccess(t *testing.T) {
	var st State
	_ = st.RecordARI(ARIResponse{Window: Window{Start: t0, End: t0.Add(day)}, ExplanationURL: "u"}, t0, seeded(1))
	st.RecordOrder(t0)
	st.RecordFailure(Failure{Err: "x", ProblemType: "p"}, t0, seeded(1))
	st.RecordRevoked(t0)
	st.RecordOrder(t0.Add(time.Hour))
	st.RecordSuccess(t0.Add(2*time.Hour), Certificate{NotBefore: t0.Add(time.Hour), NotAfter: t0.Add(time.Hour + 6*day)})
	want := State{Orders: []time.Time{t0, t0.Add(time.Hour)}, LastSuccess: t0.Add(2 * time.Hour), ARINextFetch: t0.Add(time.Hour + 2*day)}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("after RecordSuccess (-want +got):\n%s", diff)
	}
}

// TestFirstARIFetch: a third of the lifetime after notBefore, at most
// MaxFirstARIDelay; zero (fetch at once) without a usable validity.
func TestFirstARIFetch(t *testing.T) {
	tests := []struct {
		name     string
		from, to time.Time
		want     time.Time
	}{
		{"6 days", t0, t0.Add(6 * day), t0.Add(2 * day)},
		{"2 days", t0, t0.Add(2 * day), t0.Add(16 * time.Hour)},
		{"9 days: the cap", t0, t0.Add(9 * day), t0.Add(MaxFirstARIDelay)},
		{"90 days: the cap", t0, t0.Add(90 * day), t0.Add(3 * day)},
		{"no certificate", time.Time{}, time.Time{}, time.Time{}},
		{"malformed validity", t0, t0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FirstARIFetch(tt.from, tt.to); !got.Equal(tt.want) {
				t.Errorf("FirstARIFetch(%v, %v) = %v, want %v", tt.from, tt.to, got, tt.want)
			}
		})
	}
}

func TestRecordOrderPrunes(t *testing.T) {
	var st State
	st.RecordOrder(t0.Add(-8 * day))
	st.RecordOrder(t0.Add(-6 * day))
	st.RecordOrder(t0)
	want := []time.Time{t0.Add(-6 * day), t0}
	if diff := cmp.Diff(want, st.Orders); diff != "" {
		t.Errorf("Orders (-want +got):\n%s", diff)
	}

	st = State{}
	for i := range maxOrdersCeiling + 20 {
		st.RecordOrder(t0.Add(time.Duration(i) * time.Second))
	}
	if len(st.Orders) != maxOrdersCeiling || !st.Orders[0].Equal(t0.Add(20*time.Second)) {
		t.Errorf("after %d orders: kept %d starting %v, want the newest %d", maxOrdersCeiling+20, len(st.Orders), st.Orders[0], maxOrdersCeiling)
	}
}

func TestStateJSON(t *testing.T) {
	var st State
	_ = st.RecordARI(ARIResponse{Window: Window{Start: t0, End: t0.Add(day)}, ExplanationURL: "https://ca.example/x", RetryAfter: time.Hour}, t0, seeded(1))
	st.RecordOrder(t0)
	st.RecordFailure(Failure{Err: "bad", ProblemType: ProblemRateLimited}, t0, seeded(1))
	st.RecordRevoked(t0)
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, back); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	for _, key := range []string{`"ari_window":{"start":"2026-12-01T00:00:00Z"`, `"ari_chosen"`, `"ari_next_fetch"`, `"ari_explanation_url"`,
		`"consecutive_failures":1`, `"last_error":"bad"`, `"last_problem_type"`, `"last_failure"`, `"retry_at"`, `"recent_orders"`, `"revoked":true`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	if b, _ := json.Marshal(State{}); string(b) != "{}" {
		t.Errorf("json.Marshal(State{}) = %s, want {}", b)
	}
}
