package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/luahost"
	"github.com/acmehook/acmehook/engine/store"
)

// luaHooks is the engine's wiring of the Lua host: one event.Hook per
// certificate, running its scripts, each under its script_timeout, and one
// runScript per distinct script for the run-level events, all sharing the
// script host processes of the returned Host.
func luaHooks(cfg *config.Config, opts luahost.Options) (map[string]event.Hook, []runScript, *luahost.Host) {
	base := luahost.New(opts)
	hooks := make(map[string]event.Hook, len(cfg.Certificates))
	var scripts []runScript
	index := map[string]int{}
	for _, c := range cfg.Certificates {
		hooks[c.Name] = base.WithScripts(c.Scripts, c.ScriptTimeout.Duration)
		for _, s := range c.Scripts {
			i, ok := index[s]
			if !ok {
				i, index[s] = len(scripts), len(scripts)
				scripts = append(scripts, runScript{script: s, certs: map[string]bool{}})
			}
			scripts[i].certs[c.Name] = true
			scripts[i].timeout = max(scripts[i].timeout, c.ScriptTimeout.Duration)
		}
	}
	for i := range scripts {
		scripts[i].hook = base.WithScripts([]string{scripts[i].script}, scripts[i].timeout)
	}
	return hooks, scripts, base
}

// runScript is one script as the receiver of the run-level events: it
// gets each of them once, about the certificates of the run that use it,
// under the longest script_timeout of those certificates.
type runScript struct {
	script  string
	hook    event.Hook
	certs   map[string]bool // the certificates whose scripts name it
	timeout time.Duration
}

// raiseRun hands a run-level event to every script used by a certificate
// of certs: ev is made per script by mk from the entries of certs that
// script's certificates are (in certs' order). A script's error fails no
// certificate: the caller gets every error by script and decides (run-end
// marks the deploys it was told about pending again). The scripts run one
// after another under ctx.
func (e *Engine) raiseRun(ctx context.Context, certs []event.RunCertificate, mk func([]event.RunCertificate) event.Event) map[*runScript]error {
	errs := map[*runScript]error{}
	for i := range e.scripts {
		rs := &e.scripts[i]
		var mine []event.RunCertificate
		for _, c := range certs {
			if rs.certs[c.Cert] {
				mine = append(mine, c)
			}
		}
		if len(mine) == 0 {
			continue
		}
		ev := mk(mine)
		if err := rs.hook.Handle(ctx, ev); err != nil {
			e.log.Error(string(ev.Type)+" script failed", "script", rs.script, "error", err)
			errs[rs] = err
		}
	}
	return errs
}

// raise hands ev to cert's hook. For a pre-event (challenge-provision) an
// error is the veto; for a post-event it lists every handler that failed.
func (e *Engine) raise(ctx context.Context, cert *config.Certificate, ev event.Event) error {
	h, ok := e.hooks[cert.Name]
	if !ok {
		return nil
	}
	return h.Handle(ctx, ev)
}

// problemOf returns the ACME problem in err's chain, or nil.
func problemOf(err error) *acme.Problem {
	var p *acme.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

// runBegin raises run-begin for the run of jobs, started at started: what
// it is about to do with each certificate. A handler's error is logged; it
// stops nothing.
func (e *Engine) runBegin(ctx context.Context, jobs []*job, started time.Time) {
	if len(e.scripts) == 0 {
		return
	}
	certs := make([]event.RunCertificate, len(jobs))
	for i, j := range jobs {
		c := event.RunCertificate{Cert: j.cert.Name, Domains: domains(j.cert), Action: string(j.status.Next), Reason: j.status.Reason}
		if j.status.Err != nil {
			c.Action, c.Reason = "fail", j.status.Err.Error()
		}
		if j.current != nil {
			c.Serial, c.NotAfter = j.current.Info.Serial, j.current.Info.NotAfter
		}
		certs[i] = c
	}
	e.raiseRun(ctx, certs, func(mine []event.RunCertificate) event.Event {
		return event.NewRunBegin(started, mine)
	})
}

// runEnd raises run-end for the run of jobs, whose results are res: what
// it did with each certificate. A script's error fails no order, but its
// reload (or whatever it does once per run) did not happen: the
// certificates it was told were deployed get their deploy marked pending
// again, so the next run deploys them again (issued or renew, then
// run-end), and their results get the error (wrapping ErrDeploy). A run
// being stopped raises no run-end and marks those deploys pending the same
// way.
func (e *Engine) runEnd(ctx context.Context, jobs []*job, res *RunResult, started time.Time) {
	if len(e.scripts) == 0 {
		return
	}
	certs := make([]event.RunCertificate, len(res.Results))
	byName := map[string]int{}
	for i, r := range res.Results {
		c := event.RunCertificate{Cert: r.Name, Domains: domains(jobs[i].cert), Action: string(r.Action), Reason: r.Reason, Serial: r.Serial, NotAfter: r.NotAfter}
		switch r.Action {
		case ActionIssued, ActionRenewed, ActionDeployed:
			c.Deployed = r.Err == nil
		}
		if r.Err != nil {
			c.Error = r.Err.Error()
		}
		certs[i], byName[r.Name] = c, i
	}
	var errs map[*runScript]error
	if err := ctx.Err(); err != nil {
		errs = map[*runScript]error{}
		for i := range e.scripts {
			errs[&e.scripts[i]] = fmt.Errorf("run-end not raised: %w", err)
		}
	} else {
		errs = e.raiseRun(ctx, certs, func(mine []event.RunCertificate) event.Event {
			return event.NewRunEnd(started, mine)
		})
	}
	sctx := context.WithoutCancel(ctx)
	for rs, err := range errs {
		for name := range rs.certs {
			i, ok := byName[name]
			if !ok || !certs[i].Deployed {
				continue
			}
			j, r := jobs[i], &res.Results[i]
			j.log.Warn("the deploy is marked pending again: a run-end script did not complete", "script", rs.script, "error", err)
			r.Err = errors.Join(r.Err, fmt.Errorf("%w: %w", ErrDeploy, err))
			if e.coord != nil {
				// In a fleet, this node's deploy record says it is
				// pending (the metadata is the owner's, and the
				// certificate's lock is released by now).
				rec := DeployRecord{Node: e.coord.Node(), Version: r.Version, Serial: r.Serial, Result: "error", Time: e.now().UTC(), Error: store.CapText(err.Error())}
				if rerr := e.coord.RecordDeploy(sctx, name, rec); rerr != nil {
					r.Err = errors.Join(r.Err, fmt.Errorf("recording the deploy: %w", rerr))
				}
				e.status.forget(name)
				continue
			}
			j.meta.PendingDeploy = true
			j.meta.Events = append(j.meta.Events, MetaEvent{Time: e.now(), Name: string(event.RunEnd), Result: "error", Detail: err.Error(), Version: r.Version})
			if serr := e.saveMeta(sctx, name, j.meta); serr != nil {
				r.Err = errors.Join(r.Err, fmt.Errorf("saving metadata: %w", serr))
			}
		}
	}
}

// userActionRequired raises user-action-required when err, a
// certificate's failure, carries the CA's userActionRequired problem
// (RFC 8555 §6.7): nothing acmehook can retry fixes it until a person
// visits the problem's instance URL. current is the certificate in
// service, if any. The failed event follows, as for any failure.
func (e *Engine) userActionRequired(ctx context.Context, j *job, current *event.Certificate, err error) {
	p := problemOf(err)
	if p == nil || p.Type != acme.ProblemUserActionRequired {
		return
	}
	j.log.Error("the CA requires a person to act before it issues again: visit the problem's instance URL", "instance", p.Instance, "problem_detail", p.Detail)
	if herr := e.raise(ctx, j.cert, event.NewUserActionRequired(j.cert.Name, domains(j.cert), current, err)); herr != nil {
		j.log.Warn("user-action-required script failed", "error", herr)
	}
}

// renewalHeld raises renewal-held for j, whose status holds its order
// back (NextHold): once per hold (a hold that ends at another time is a
// new one), and once more, when the certificate in service expires before
// the hold ends and the first event did not say so. What was raised is
// recorded in the certificate's metadata, so the daemon's hourly looks at
// a held certificate (HeldRecheck) raise nothing new.
func (e *Engine) renewalHeld(ctx context.Context, j *job) {
	st := j.status
	expiring := j.current != nil && !j.current.Info.NotAfter.After(st.At)
	if n := j.meta.HeldNotice; n != nil && n.Until.Equal(st.At) && (n.Expiring || !expiring) {
		return
	}
	current := e.currentEventCertificate(ctx, j.cert)
	if herr := e.raise(ctx, j.cert, event.NewRenewalHeld(j.cert.Name, domains(j.cert), current, st.Reason, st.At)); herr != nil {
		j.log.Warn("renewal-held script failed", "error", herr)
	}
	j.meta.HeldNotice = &HeldNotice{Until: st.At, Expiring: expiring}
	if err := e.saveMeta(context.WithoutCancel(ctx), j.cert.Name, j.meta); err != nil {
		j.log.Warn("saving metadata", "error", err)
	}
}
