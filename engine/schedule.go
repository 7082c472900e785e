package engine

import (
	"container/heap"
	"time"
)

// schedule is the daemon's next-check time per certificate, ordered by
// time, so that a wake takes only the certificates that are due and the
// earliest next check is found without looking at every certificate: with
// 10,000 certificates a wake costs what the due ones cost.
//
// Each certificate has at most one live entry; set replaces it (the old
// heap entry is left behind and skipped when it surfaces, and the heap is
// rebuilt when such leftovers outnumber the certificates).
type schedule struct {
	at map[string]time.Time // the live next check of each scheduled certificate
	h  checkHeap
}

type check struct {
	name string
	at   time.Time
}

// newSchedule returns a schedule where every name is due at once.
func newSchedule(names []string) *schedule {
	s := &schedule{at: make(map[string]time.Time, len(names))}
	for _, n := range names {
		s.set(n, time.Time{})
	}
	return s
}

// set makes at the next check of name.
func (s *schedule) set(name string, at time.Time) {
	s.at[name] = at
	heap.Push(&s.h, check{name, at})
	if len(s.h) > 2*len(s.at)+64 {
		s.h = s.h[:0]
		for n, t := range s.at {
			s.h = append(s.h, check{n, t})
		}
		heap.Init(&s.h)
	}
}

// due removes and returns, earliest first, the certificates whose next
// check is not after now. They are no longer scheduled until set again.
func (s *schedule) due(now time.Time) []string {
	var names []string
	for len(s.h) > 0 && !s.h[0].at.After(now) {
		c := heap.Pop(&s.h).(check)
		if t, ok := s.at[c.name]; ok && t.Equal(c.at) {
			delete(s.at, c.name)
			names = append(names, c.name)
		}
	}
	return names
}

// earliest returns the certificate checked next and when; ok is false
// when none is scheduled.
func (s *schedule) earliest() (name string, at time.Time, ok bool) {
	for len(s.h) > 0 {
		c := s.h[0]
		if t, live := s.at[c.name]; live && t.Equal(c.at) {
			return c.name, c.at, true
		}
		heap.Pop(&s.h)
	}
	return "", time.Time{}, false
}

// checkHeap is a min-heap of checks by time (container/heap).
type checkHeap []check

func (h checkHeap) Len() int           { return len(h) }
func (h checkHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h checkHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *checkHeap) Push(x any)        { *h = append(*h, x.(check)) }
func (h *checkHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
