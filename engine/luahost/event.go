package luahost

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/acmehook/acmehook/engine/event"
)

// Handle implements event.Hook: it dispatches ev to every script of
// Options.Scripts in order, each bounded by Options.Timeout. A pre-event
// (challenge-provision) stops at the first failure, which is that script's
// veto; a post-event runs every script and returns every failure joined.
// Each failure wraps a *ScriptError and reads "running issued script
// scripts/nginx.lua:12: ...".
//
// challenge-cleanup goes to every script at once, under the caller's one
// deadline: each script undoes what it provisioned, independently of the
// others, and a shutdown waits for one deadline, not one per script.
func (h *Host) Handle(ctx context.Context, ev event.Event) error {
	if ev.Type == event.ChallengeCleanup {
		errs := make([]error, len(h.opts.Scripts)) // joined in script order
		var wg sync.WaitGroup
		for i, script := range h.opts.Scripts {
			wg.Go(func() {
				if err := h.Dispatch(ctx, script, ev); err != nil {
					errs[i] = fmt.Errorf("running %s script %w", ev.Type, err)
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	var errs []error
	for _, script := range h.opts.Scripts {
		err := h.Dispatch(ctx, script, ev)
		if err == nil {
			continue
		}
		err = fmt.Errorf("running %s script %w", ev.Type, err)
		if ev.Type.Pre() {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// eventTable builds the Lua table of ev field by field: snake_case keys
// (see event.Event), zero-valued fields absent (nil in Lua), times as Unix
// seconds.
func eventTable(L *lua.LState, e event.Event) *lua.LTable {
	t := L.CreateTable(0, 26)
	str := func(t *lua.LTable, k, v string) {
		if v != "" {
			t.RawSetString(k, lua.LString(v))
		}
	}
	unix := func(k string, v time.Time) {
		if !v.IsZero() {
			t.RawSetString(k, lua.LNumber(v.Unix()))
		}
	}
	str(t, "name", string(e.Type))
	str(t, "cert_name", e.Cert)
	domains := L.CreateTable(len(e.Domains), 0)
	for _, d := range e.Domains {
		domains.Append(lua.LString(d))
	}
	t.RawSetString("domains", domains)
	str(t, "cert_path", e.CertPath)
	str(t, "key_path", e.KeyPath)
	str(t, "chain_path", e.ChainPath)
	str(t, "fullchain_path", e.FullchainPath)
	str(t, "cert_pem", e.CertPEM)
	str(t, "chain_pem", e.ChainPEM)
	str(t, "fullchain_pem", e.FullchainPEM)
	str(t, "serial", e.Serial)
	unix("not_before", e.NotBefore)
	unix("not_after", e.NotAfter)
	str(t, "issuer", e.Issuer)
	str(t, "profile", e.Profile)
	str(t, "previous_serial", e.PreviousSerial)
	if e.Type == event.Revoke || e.RevocationReason != 0 {
		t.RawSetString("revocation_reason", lua.LNumber(e.RevocationReason))
	}
	unix("held_until", e.HeldUntil)
	str(t, "hold_reason", e.HoldReason)
	if e.ExpiresBeforeHoldEnds {
		t.RawSetString("expires_before_hold_ends", lua.LTrue)
	}
	str(t, "directory", e.Directory)
	str(t, "account_url", e.AccountURL)
	str(t, "terms_of_service", e.TermsOfService)
	str(t, "previous_terms_of_service", e.PreviousTermsOfService)
	if e.Type == event.TOSChanged {
		t.RawSetString("agreed", lua.LBool(e.Agreed))
	}
	if e.Error != nil {
		et := L.CreateTable(0, 4)
		str(et, "message", e.Error.Message)
		str(et, "problem_type", e.Error.ProblemType)
		str(et, "problem_detail", e.Error.ProblemDetail)
		str(et, "problem_instance", e.Error.ProblemInstance)
		t.RawSetString("error", et)
	}
	if c := e.Challenge; c != nil {
		ct := L.CreateTable(0, 6)
		str(ct, "type", c.Type)
		str(ct, "identifier", c.Identifier)
		str(ct, "token", c.Token)
		str(ct, "key_authorization", c.KeyAuthorization)
		str(ct, "dns_name", c.DNSName)
		str(ct, "dns_value", c.DNSValue)
		t.RawSetString("challenge", ct)
	}
	if r := e.Run; r != nil {
		runFields(L, t, r, e.Type == event.RunEnd)
	}
	if e.Test {
		t.RawSetString("test", lua.LTrue)
	}
	if e.DryRun {
		t.RawSetString("dry_run", lua.LTrue)
	}
	return t
}

// runFields sets the keys of a run-level event in t: started_at,
// certificates (an array of tables), and on run-end the name lists, empty
// when no certificate is in them.
func runFields(L *lua.LState, t *lua.LTable, r *event.Run, end bool) {
	names := func(k string, v []string) {
		a := L.CreateTable(len(v), 0)
		for _, n := range v {
			a.Append(lua.LString(n))
		}
		t.RawSetString(k, a)
	}
	if !r.Started.IsZero() {
		t.RawSetString("started_at", lua.LNumber(r.Started.Unix()))
	}
	certs := L.CreateTable(len(r.Certificates), 0)
	for _, c := range r.Certificates {
		ct := L.CreateTable(0, 8)
		set := func(k, v string) {
			if v != "" {
				ct.RawSetString(k, lua.LString(v))
			}
		}
		set("cert_name", c.Cert)
		ds := L.CreateTable(len(c.Domains), 0)
		for _, d := range c.Domains {
			ds.Append(lua.LString(d))
		}
		ct.RawSetString("domains", ds)
		set("action", c.Action)
		set("reason", c.Reason)
		set("serial", c.Serial)
		if !c.NotAfter.IsZero() {
			ct.RawSetString("not_after", lua.LNumber(c.NotAfter.Unix()))
		}
		if end {
			ct.RawSetString("deployed", lua.LBool(c.Deployed))
		}
		set("error", c.Error)
		certs.Append(ct)
	}
	t.RawSetString("certificates", certs)
	if end {
		names("issued", r.Issued)
		names("renewed", r.Renewed)
		names("deployed", r.Deployed)
		names("failed", r.Failed)
		names("held", r.Held)
	}
}
