package engine

import (
	"slices"
	"testing"
	"time"
)

// TestSchedule: due returns, earliest first, only what is due, once; a
// set replaces the earlier time of the same certificate; earliest skips
// replaced entries; many replacements do not grow the heap without bound.
func TestSchedule(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := newSchedule([]string{"a", "b", "c"})
	if got := s.due(t0); len(got) != 3 {
		t.Fatalf("due at start = %v, want all three", got)
	}
	if _, _, ok := s.earliest(); ok {
		t.Fatal("earliest after taking every certificate: want none")
	}
	s.set("a", t0.Add(3*time.Hour))
	s.set("b", t0.Add(time.Hour))
	s.set("c", t0.Add(2*time.Hour))
	s.set("a", t0.Add(30*time.Minute)) // replaces a's 3h
	if n, at, ok := s.earliest(); !ok || n != "a" || !at.Equal(t0.Add(30*time.Minute)) {
		t.Errorf("earliest = %s %s %v, want a at +30m", n, at, ok)
	}
	if got := s.due(t0.Add(time.Hour)); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("due at +1h = %v, want [a b]", got)
	}
	if got := s.due(t0.Add(4 * time.Hour)); !slices.Equal(got, []string{"c"}) {
		t.Errorf("due at +4h = %v, want [c] (a's replaced 3h entry is not due)", got)
	}
	for i := range 1000 {
		s.set("c", t0.Add(time.Duration(1000-i)*time.Hour))
	}
	if len(s.h) > 2*len(s.at)+64 {
		t.Errorf("heap holds %d entries for %d certificates", len(s.h), len(s.at))
	}
	if n, at, ok := s.earliest(); !ok || n != "c" || !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("earliest = %s %s %v, want c at +1h (its last set)", n, at, ok)
	}
}
