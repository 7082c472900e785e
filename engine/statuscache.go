package engine

import (
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/metrics"
)

// statusCache keeps what a metrics scrape reports of each certificate, as
// the engine last read it from the storage, so that a scrape reads the
// storage only for what changed since (the daemon reads every certificate
// at its start, and then what is due; a scrape of 10,000 certificates
// would otherwise read them all every time).
//
// An entry is filled by every read of a certificate's state (load), and
// dropped by every write of it (saveMeta, commit, a key moved aside, a
// deploy record): a fill whose read began before a write is refused (the
// per-name generation moved). It expires when the status may change with
// time alone: at its NextCheck, or when a failure backoff ends. On the
// file backend nothing else writes (the storage lock is exclusive); in a
// fleet other nodes do, so an entry of a certificate another node owns
// lasts only the coordinator's Interval, one whose owner changed is not
// used, and the daemon drops the entries of the certificates whose new
// versions the coordinator reports (forget). Anything else another
// process writes beside a fleet (a run's failed order) is seen within
// MaxStatusAge.
//
// A nil *statusCache keeps nothing (an Engine not made by New).
type statusCache struct {
	mu      sync.Mutex
	entries map[string]cachedStatus
	gens    map[string]uint64 // writes per certificate
	epoch   uint64            // forgetAll calls
}

// MaxStatusAge bounds how long a fleet node reports a certificate's state
// without reading it again.
const MaxStatusAge = 10 * time.Minute

type cachedStatus struct {
	m     metrics.Certificate
	until time.Time // valid before this
	owned bool      // in a fleet: this node owned the certificate when read
}

// cacheGen identifies the state of a certificate's writes when a read
// began.
type cacheGen struct{ epoch, gen uint64 }

func newStatusCache() *statusCache {
	return &statusCache{entries: map[string]cachedStatus{}, gens: map[string]uint64{}}
}

// generation returns the write generation of name, to pass to fill.
func (c *statusCache) generation(name string) cacheGen {
	if c == nil {
		return cacheGen{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return cacheGen{c.epoch, c.gens[name]}
}

// fill records m for name, read at generation g, valid before until;
// nothing when name was written (or everything forgotten) since g.
func (c *statusCache) fill(name string, g cacheGen, m metrics.Certificate, until time.Time, owned bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g != (cacheGen{c.epoch, c.gens[name]}) {
		return
	}
	c.entries[name] = cachedStatus{m: m, until: until, owned: owned}
}

// get returns the entry of name if it is still valid at now for a node
// that owns the certificate now (owned).
func (c *statusCache) get(name string, now time.Time, owned bool) (metrics.Certificate, bool) {
	if c == nil {
		return metrics.Certificate{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.entries[name]
	if !ok || !now.Before(s.until) || s.owned != owned {
		return metrics.Certificate{}, false
	}
	return s.m, true
}

// forget drops the entries of names, whose state was written.
func (c *statusCache) forget(names ...string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		delete(c.entries, n)
		c.gens[n]++
	}
}

// forgetAll drops every entry.
func (c *statusCache) forgetAll() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.epoch++
}

// cacheStatus records j, read at generation g, for the metrics: unless
// its state could not be read (an error is read again at each scrape).
func (e *Engine) cacheStatus(g cacheGen, j *job) {
	if e.status == nil || j.status.Err != nil || j.meta == nil {
		return
	}
	now := e.now()
	until := j.status.NextCheck
	if st := j.meta.Renewal; st.Failures > 0 && st.RetryAt.After(now) {
		until = minTime(until, st.RetryAt) // heldBy changes then
	}
	owned := true
	if e.coord != nil {
		owned = e.coord.Owns(j.cert.Name)
		limit := MaxStatusAge
		if !owned {
			limit = e.coord.Interval()
		}
		until = minTime(until, now.Add(limit))
	}
	e.status.fill(j.cert.Name, g, certificateMetrics(j.status, j.meta, now), until, owned)
}

// forgetStatus drops what the engine keeps of the state of names for the
// metrics (all of them with all): the daemon calls it for the changes a
// fleet's coordinator reports.
func (e *Engine) forgetStatus(names []string, all bool) {
	if all {
		e.status.forgetAll()
		return
	}
	e.status.forget(names...)
}
