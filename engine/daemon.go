package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/config"
)

// Clock is the daemon's time source. Tests inject one to drive the
// schedule without sleeping.
type Clock interface {
	Now() time.Time
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Daemon timing.
const (
	// DefaultMaxSleep caps one wait of the daemon, so a wall clock that
	// jumps (or a suspended machine) is noticed within it. Waking early
	// only re-reads the store; the CA is contacted only for what is due.
	DefaultMaxSleep = time.Hour
	// MinRecheck is the shortest wait after a certificate was handled and
	// is still due (its state could not be saved, for example), so the
	// daemon never spins.
	MinRecheck = time.Minute
)

// DaemonOptions configure Daemon.
type DaemonOptions struct {
	// Options make the engine; Options.Config is the initial
	// configuration. Options.Now is replaced by Clock.Now.
	Options
	// Load re-reads the configuration when Reload receives. An invalid new
	// configuration (or one that moves the storage) is logged and the
	// previous one kept.
	Load   func() (*config.Config, error)
	Reload <-chan os.Signal
	// Clock is the time source; nil means the system clock.
	Clock Clock
	// MaxSleep caps one wait; zero means DefaultMaxSleep.
	MaxSleep time.Duration
	// afterRun, a test seam, is called after each run with its result.
	afterRun func(*RunResult)
}

// Daemon is the long-running form of Run (acmehook daemon). It keeps, per
// certificate, the time of its next check, from its renewal decision
// (Decision.NextCheck: the renewal time, the next renewal information
// fetch or the end of a backoff), runs the certificates whose time has
// come, and sleeps on a single timer until the earliest next check. A
// failing CA only makes certificates back off: the daemon keeps running.
// Before each run, plugins that died are forgotten so they are launched
// again.
//
// On a single machine one run is in progress at a time: certificates that
// come due meanwhile wait for it to end. In a fleet (Options.Coordinator)
// the daemon does not wait: what comes due while a run is in progress — a
// certificate taken over from a node that died, another node's new version
// to deploy, a certificate whose lock was busy — starts at once in a run of
// its own beside it (with its own run-begin and run-end), and the runs
// share Config.Concurrency. A certificate is in one run at a time: one
// still waiting in an older run moves to the new one, one being worked on
// is looked at again when its job ends.
//
// It returns nil when ctx is cancelled (SIGTERM): the runs in progress are
// abandoned through the same ctx, and challenge cleanup still runs; it
// returns once they have. It returns an error only if the first engine
// cannot be made.
func Daemon(ctx context.Context, opts DaemonOptions) error {
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	maxSleep := opts.MaxSleep
	if maxSleep <= 0 {
		maxSleep = DefaultMaxSleep
	}
	eo := opts.Options
	eo.Now = clock.Now
	eng, err := New(eo)
	if err != nil {
		return err
	}
	defer func() {
		if err := eng.Close(); err != nil {
			eng.log.Warn("stopping plugins", "error", err)
		}
	}()
	log := eng.log
	log.Info("daemon started", "certificates", len(eng.cfg.Certificates))
	fleet := eng.coord != nil
	next := newSchedule(eng.names()) // every certificate is checked at once
	work := newAssignment()
	// owned is, in a fleet, whether this node owned each certificate when
	// the membership was last looked at: what moves to it is started at
	// once.
	owned := map[string]bool{}
	if fleet {
		for _, n := range eng.names() {
			owned[n] = eng.coord.Owns(n)
		}
	}
	type finished struct {
		id  int
		res *RunResult
		err error
	}
	runDone := make(chan finished)
	runs, lastID := 0, 0
	recheckAll := false // a membership change during a run: look at everything once the runs are done
	// start hands names to a new run, which starts at once.
	start := func(names []string) {
		lastID++
		id := lastID
		names = work.hand(id, names)
		if len(names) == 0 {
			return
		}
		for _, n := range eng.plugins.forgetDead() {
			log.Warn("plugin is not running; it will be launched again", "plugin", n)
		}
		eng.inConfigOrder(names)
		runs++
		e := eng
		ro := RunOptions{
			Names:  names,
			urgent: runs > 1, // started beside a run in progress
			take:   func(name string) bool { return work.take(id, name) },
			ended: func(name string, r Result) {
				var at time.Time
				if r.Action == ActionBusy {
					// In a fleet, a certificate whose lock another node
					// held is looked at again soon.
					at = e.now().Add(e.coord.Interval())
				} else {
					at = e.nextCheck(ctx, e.certs[name], r.nextCheck)
				}
				work.end(id, name, at)
			},
		}
		go func() {
			res, err := e.Run(ctx, ro)
			runDone <- finished{id, res, err}
		}()
	}
	// schedule takes the jobs that ended from the assignment into next.
	schedule := func() {
		for _, x := range work.takeEnded() {
			if x.again {
				next.set(x.name, clock.Now())
			} else {
				next.set(x.name, x.next)
			}
		}
	}
	// reloadNow makes the engine of the configuration loaded again (no run
	// is in progress).
	reloadNow := func() {
		neng, err := reload(opts, eo, eng.cfg)
		if err != nil {
			log.Error("reloading the configuration failed; keeping the previous one", "error", err)
			return
		}
		if err := eng.Close(); err != nil {
			log.Warn("stopping plugins", "error", err)
		}
		eng, next = neng, newSchedule(neng.names())
		if fleet {
			clear(owned)
			for _, n := range eng.names() {
				owned[n] = eng.coord.Owns(n)
			}
		}
		log.Info("configuration reloaded", "certificates", len(eng.cfg.Certificates))
	}
	var timer <-chan time.Time
	var timerAt time.Time
	idle := false          // woken by the timer
	drained := false       // the last run in progress just ended
	reloadPending := false // in a fleet: SIGHUP came during a run
	for {
		if reloadPending && runs == 0 {
			reloadPending = false
			reloadNow()
		}
		if (runs == 0 || fleet) && !reloadPending {
			if due := next.due(clock.Now()); len(due) > 0 {
				start(due)
			} else if idle && runs == 0 {
				// Nothing due: the CA's terms are still looked at once a
				// day (the wait below is at most MaxSleep, an hour by
				// default).
				eng.termsMu.Lock()
				eng.checkTerms(ctx, false)
				eng.termsMu.Unlock()
			}
		}
		idle = false
		if runs == 0 || fleet {
			name, at, ok := next.earliest()
			wait := maxSleep
			if ok {
				wait = min(max(at.Sub(clock.Now()), 0), maxSleep)
			}
			// A single machine sleeps anew after each wake, as it only
			// wakes between runs; a fleet's daemon also wakes as jobs
			// end, and keeps its timer while the earliest check stays.
			rearm := timer == nil || !fleet || !at.Equal(timerAt)
			if rearm {
				timer, timerAt = clock.After(wait), at
			}
			if ok && runs == 0 && (rearm || drained) {
				log.Info("next check", "cert", name, "at", at.UTC().Format(time.RFC3339), "in", wait.Round(time.Second).String())
			}
			drained = false
		} else {
			timer = nil
		}
		var changed <-chan struct{} // in a fleet: another node stored, or nodes came or went
		var ended <-chan struct{}   // in a fleet: jobs ended, to be scheduled at once
		if fleet {
			changed, ended = eng.coord.Changed(), work.signal
		}
		reloads := opts.Reload
		if runs > 0 && !fleet {
			reloads = nil // a new engine once the run is done
		}
		select {
		case <-ctx.Done():
			for ; runs > 0; runs-- {
				<-runDone
			}
			log.Info("daemon stopping")
			return nil
		case f := <-runDone:
			runs--
			if f.err != nil {
				log.Error("run failed", "error", f.err)
			}
			if f.res != nil && opts.afterRun != nil {
				opts.afterRun(f.res)
			}
			schedule()
			for _, n := range work.release(f.id) { // not run (the run failed)
				next.set(n, eng.nextCheck(ctx, eng.certs[n], time.Time{}))
			}
			drained = runs == 0
			if runs == 0 && recheckAll {
				recheckAll = false
				next = newSchedule(eng.names())
			}
		case <-ended:
			schedule()
		case <-changed:
			names, all := eng.coord.TakeChanges()
			eng.forgetStatus(names, all)
			switch {
			case all && runs == 0:
				next = newSchedule(eng.names())
			case all:
				// What moved to this node starts now; the rest is looked
				// at again once the runs in progress are done.
				recheckAll = true
				for _, n := range eng.names() {
					if eng.coord.Owns(n) && !owned[n] {
						next.set(n, clock.Now())
					}
				}
			}
			if all {
				for _, n := range eng.names() {
					owned[n] = eng.coord.Owns(n)
				}
			}
			for _, n := range names {
				if eng.certs[n] != nil {
					next.set(n, clock.Now())
				}
			}
		case <-reloads:
			if runs > 0 {
				// In a fleet: once the runs in progress end; no new
				// one starts meanwhile.
				reloadPending = true
				continue
			}
			reloadNow()
		case <-timer:
			timer, idle = nil, true
		}
	}
}

// assignment is which run of the daemon has each certificate, so that no
// certificate is worked on by two runs at once. Safe for concurrent use:
// the runs' jobs take and end their certificates on their own goroutines.
type assignment struct {
	mu      sync.Mutex
	run     map[string]int  // the run that has the certificate
	working map[string]bool // its job is running
	again   map[string]bool // due again while its job was running
	ended   []endedJob
	signal  chan struct{} // has ended jobs
}

type endedJob struct {
	name  string
	next  time.Time // the next check the run decided on
	again bool      // look at it again at once
}

func newAssignment() *assignment {
	return &assignment{run: map[string]int{}, working: map[string]bool{}, again: map[string]bool{}, signal: make(chan struct{}, 1)}
}

// hand gives names to run id and returns the ones it gets: a certificate
// waiting in an older run moves to run id (the older one skips it), one
// whose job is running is marked to be looked at again when it ends.
func (a *assignment) hand(id int, names []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var got []string
	for _, n := range names {
		if a.working[n] {
			a.again[n] = true
			continue
		}
		a.run[n] = id
		got = append(got, n)
	}
	return got
}

// take starts the job of name in run id, unless another run has it now.
func (a *assignment) take(id int, name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.run[name] != id {
		return false
	}
	a.working[name] = true
	return true
}

// end records that the job of name in run id ended, next being the next
// check its run decided on.
func (a *assignment) end(id int, name string, next time.Time) {
	a.mu.Lock()
	if a.run[name] == id {
		delete(a.run, name)
	}
	delete(a.working, name)
	again := a.again[name]
	delete(a.again, name)
	a.ended = append(a.ended, endedJob{name, next, again})
	a.mu.Unlock()
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

// takeEnded returns and forgets the jobs that ended.
func (a *assignment) takeEnded() []endedJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.ended
	a.ended = nil
	return e
}

// release forgets the certificates run id still has (it ended without
// running them) and returns them.
func (a *assignment) release(id int) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var names []string
	for n, r := range a.run {
		if r == id {
			delete(a.run, n)
			names = append(names, n)
		}
	}
	return names
}

// reload loads the configuration again and makes an engine for it.
func reload(opts DaemonOptions, eo Options, old *config.Config) (*Engine, error) {
	if opts.Load == nil {
		return nil, errors.New("no way to load the configuration")
	}
	cfg, err := opts.Load()
	if err != nil {
		return nil, err
	}
	if from, to := old.Store.Where(), cfg.Store.Where(); from != to {
		return nil, fmt.Errorf("storage moved from %s to %s: restart the daemon for that", from, to)
	}
	eo.Config = cfg
	return New(eo)
}

// nextCheck is when the daemon should look at cert again, never sooner
// than MinRecheck: known, when the run left cert's state as it found it
// (nothing was done, or the order was held back), from the status the run
// decided on; otherwise from its state read again.
func (e *Engine) nextCheck(ctx context.Context, cert *config.Certificate, known time.Time) time.Time {
	soon := e.now().Add(MinRecheck)
	at := known
	if at.IsZero() {
		st := e.load(ctx, cert, loadOptions{infoOnly: true}).status
		if st.Err != nil {
			e.log.Warn("loading the certificate's state", "cert", cert.Name, "error", st.Err)
			return soon
		}
		at = st.NextCheck
	}
	if at.Before(soon) {
		return soon
	}
	return at
}

// names returns the configured certificates' names.
func (e *Engine) names() []string {
	out := make([]string, len(e.cfg.Certificates))
	for i, c := range e.cfg.Certificates {
		out[i] = c.Name
	}
	return out
}

// inConfigOrder sorts names of configured certificates as the
// configuration lists them.
func (e *Engine) inConfigOrder(names []string) {
	if len(names) < 2 {
		return
	}
	pos := make(map[string]int, len(names))
	for _, n := range names {
		pos[n] = -1
	}
	for i, c := range e.cfg.Certificates {
		if _, ok := pos[c.Name]; ok {
			pos[c.Name] = i
		}
	}
	slices.SortFunc(names, func(a, b string) int { return pos[a] - pos[b] })
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// forgetDead drops the plugins whose process exited and the launches that
// failed, so that the next use launches them again, and returns their
// names.
func (ps *plugins) forgetDead() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var names []string
	for name, e := range ps.entries {
		select {
		case <-e.ready:
		default:
			continue // still launching
		}
		if e.err == nil && !e.p.Exited() {
			continue
		}
		if e.p != nil {
			e.p.Close()
		}
		delete(ps.entries, name)
		names = append(names, name)
	}
	return names
}
