package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// runLogged runs an engine over cfg once and returns the results by name
// and its Debug log.
func (e *env) runLogged(cfg *config.Config) (map[string]Result, string) {
	e.t.Helper()
	st, err := store.Open(cfg.Storage, store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	var logs sdktest.LogBuffer
	eng, err := New(Options{
		Config: cfg,
		Store:  st,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer eng.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := eng.Run(ctx, RunOptions{})
	if err != nil {
		e.t.Fatalf("Run: %v", err)
	}
	out := map[string]Result{}
	for _, r := range res.Results {
		out[r.Name] = r
	}
	return out, logs.String()
}

// wrongDNSProg writes a dnsexec program that sets a TXT value other than
// the one it is given, and returns its path.
func wrongDNSProg(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "wrong-dns")
	script := fmt.Sprintf("#!/bin/sh\nexec %q \"$1\" \"$2\" \"not-$3\"\n", dnsProg)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// extraPlugins are solvers that present the wrong thing: webroot into a
// directory nobody serves is "unserved" (from env.write); these add a
// standalone listening on a port the CA does not dial and a dnsexec
// setting a wrong TXT value (without its own propagation wait, which would
// catch it).
func extraPlugins(t *testing.T, e *env) string {
	t.Helper()
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
[plugins.elsewhere]
path = %q
[plugins.elsewhere.config]
tls_listen = ["127.0.0.1:%d"]
http_listen = []

[plugins.wrongdns]
path = %q
[plugins.wrongdns.config]
program = %q
resolvers = [%q]
skip_propagation = true
env = { CHALLTESTSRV_URL = %q }
`, bins["standalone"], port, bins["dnsexec"], wrongDNSProg(t, e.work.Dir), pebble.DNSAddr, pebble.DNSManagementURL)
}

// TestSelfCheckRefuses: a solver that presents the wrong value is caught
// by the self-check: the challenge is not answered (Pebble sees no POST to
// a challenge), the error names challenge, identifier, solver and reason,
// failed and challenge-cleanup are raised and the plugin cleaned up.
func TestSelfCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		solver, challenge, domain string
		reason                    acme.VerifyReason
	}{
		{"unserved", "http-01", "unserved.example.com", acme.VerifyHTTPStatus},
		{"elsewhere", "tls-alpn-01", "elsewhere.example.com", acme.VerifyUnreachable},
		{"wrongdns", "dns-01", "*.wrongdns.example.com", acme.VerifyWrongRecord},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.write(extraPlugins(t, e) + fmt.Sprintf(`
[[certificate]]
name = "bad"
domains = [%q]
solver = %q
challenge = %q
scripts = ["events.lua"]
`, tc.domain, tc.solver, tc.challenge))
			cfg.SelfCheck.Timeout.Duration = 500 * time.Millisecond
			pebble.Counter().Reset()
			start := time.Now()
			r, logs := e.runLogged(cfg)
			elapsed := time.Since(start)
			bad := r["bad"]
			var sce *SelfCheckError
			if bad.Action != ActionFailed || !errors.As(bad.Err, &sce) {
				t.Fatalf("bad = %s %v, want failed with a *SelfCheckError", bad.Action, bad.Err)
			}
			if sce.Challenge != tc.challenge || sce.Identifier != tc.domain || sce.Solver != tc.solver || !errors.Is(bad.Err, tc.reason) {
				t.Errorf("self-check error = %+v (%v), want %s for %s by %s: %s", sce, sce.Err, tc.challenge, tc.domain, tc.solver, tc.reason)
			}
			prefix := fmt.Sprintf("self-check of %s for %s (solver %s) failed: %s", tc.challenge, tc.domain, tc.solver, tc.reason)
			if !strings.Contains(bad.Err.Error(), prefix) {
				t.Errorf("error %q does not contain %q", bad.Err, prefix)
			}
			counts, _ := pebble.Counter().Snapshot()
			if counts["POST /chalZ/"] != 0 {
				t.Errorf("Pebble requests %v: a challenge was answered", counts)
			}
			if !strings.Contains(logs, "self-check failed, retrying") {
				t.Errorf("no retry logged:\n%s", logs)
			}
			if elapsed > 10*time.Second {
				t.Errorf("run took %v with a 500ms self-check timeout", elapsed)
			}
			if ev := e.event("bad.failed"); !strings.Contains(fmt.Sprint(ev["error"]), "self-check of "+tc.challenge) {
				t.Errorf("failed event error = %v, want the self-check failure", ev["error"])
			}
			e.event("bad.challenge-cleanup." + tc.domain)
			if tc.solver == "unserved" {
				left, err := os.ReadDir(filepath.Join(e.work.Dir, "unserved", ".well-known", "acme-challenge"))
				if err != nil && !errors.Is(err, fs.ErrNotExist) || len(left) != 0 {
					t.Errorf("challenge files left after cleanup: %v %v", left, err)
				}
			}
		})
	}
}

// TestSelfCheckPasses: with self-checks on (the default), each solver type
// is checked before the CA is asked, and the certificate is issued.
func TestSelfCheckPasses(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "all"
domains = ["web.sc.example.com", "*.sc.example.com"]
solver = "webroot"
[certificate.solvers]
"*.sc.example.com" = "dnsexec"

[[certificate]]
name = "tls"
domains = ["tls.sc.example.com"]
solver = "standalone"
challenge = "tls-alpn-01"
`)
	r, logs := e.runLogged(cfg)
	for _, name := range []string{"all", "tls"} {
		if got := r[name]; got.Action != ActionIssued || got.Err != nil {
			t.Fatalf("%s = %s %v, want issued\n%s", name, got.Action, got.Err, logs)
		}
	}
	for _, want := range []string{
		"identifier=web.sc.example.com challenge=http-01 solver=webroot attempts=",
		"identifier=tls.sc.example.com challenge=tls-alpn-01 solver=standalone attempts=",
		"identifier=*.sc.example.com challenge=dns-01 solver=dnsexec attempts=",
	} {
		if !strings.Contains(logs, "self-check passed") || !strings.Contains(logs, want) {
			t.Errorf("log lacks self-check passed with %q:\n%s", want, logs)
		}
	}
}

// TestSelfCheckOff: self_check = false answers the challenge unchecked, so
// a wrong setup costs a CA validation.
func TestSelfCheckOff(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(`
[[certificate]]
name = "off"
domains = ["off.example.com"]
solver = "unserved"
self_check = false
`)
	pebble.Counter().Reset()
	r, logs := e.runLogged(cfg)
	var sce *SelfCheckError
	if got := r["off"]; got.Action != ActionFailed || errors.As(got.Err, &sce) || problemOf(got.Err) == nil {
		t.Errorf("off = %s %v, want failed by the CA", got.Action, got.Err)
	}
	if counts, _ := pebble.Counter().Snapshot(); counts["POST /chalZ/"] != 1 {
		t.Errorf("Pebble requests %v, want one challenge answered", counts)
	}
	if strings.Contains(logs, "self-check") {
		t.Errorf("self-check ran with self_check = false:\n%s", logs)
	}
}

// TestCheckSolve: CheckSolve presents, self-checks and cleans up each
// identifier with no request to the CA at all.
func TestCheckSolve(t *testing.T) {
	e := newEnv(t)
	cfg := e.write(extraPlugins(t, e) + `
[[certificate]]
name = "good"
domains = ["web.check.example.com", "*.check.example.com"]
solver = "webroot"
self_check = false # CheckSolve checks anyway
[certificate.solvers]
"*.check.example.com" = "dnsexec"

[[certificate]]
name = "tls"
domains = ["tls.check.example.com"]
solver = "standalone"
challenge = "tls-alpn-01"

[[certificate]]
name = "bad"
domains = ["web.check.example.net", "dns.check.example.net"]
solver = "unserved"
[certificate.solvers]
"dns.check.example.net" = "wrongdns"
`)
	cfg.SelfCheck.Timeout.Duration = 500 * time.Millisecond
	type row struct {
		id, solver, challenge string
		reason                acme.VerifyReason // "" for success
	}
	for _, tc := range []struct {
		cert string
		want []row
	}{
		{"good", []row{
			{"web.check.example.com", "webroot", "http-01", ""},
			{"*.check.example.com", "dnsexec", "dns-01", ""},
		}},
		{"tls", []row{{"tls.check.example.com", "standalone", "tls-alpn-01", ""}}},
		{"bad", []row{
			{"web.check.example.net", "unserved", "http-01", acme.VerifyHTTPStatus},
			{"dns.check.example.net", "wrongdns", "dns-01", acme.VerifyWrongRecord},
		}},
	} {
		t.Run(tc.cert, func(t *testing.T) {
			pebble.Counter().Reset()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			got, err := CheckSolve(ctx, cfg, tc.cert, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if counts, total := pebble.Counter().Snapshot(); total != 0 {
				t.Errorf("Pebble requests %v, want none", counts)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("CheckSolve = %d results, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Identifier != w.id || g.Solver != w.solver || g.Challenge != w.challenge || g.CleanUpErr != nil || g.Duration <= 0 {
					t.Errorf("result %d = %+v, want %s by %s with %s, cleaned up", i, g, w.id, w.solver, w.challenge)
				}
				if w.reason == "" && g.Err != nil {
					t.Errorf("%s: %v, want success", w.id, g.Err)
				}
				if w.reason != "" && !errors.Is(g.Err, w.reason) {
					t.Errorf("%s: %v, want %s", w.id, g.Err, w.reason)
				}
			}
		})
	}
	left, err := os.ReadDir(filepath.Join(webRoot, ".well-known", "acme-challenge"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) || len(left) != 0 {
		t.Errorf("webroot challenge files left: %v %v", left, err)
	}
	if _, err := CheckSolve(context.Background(), cfg, "nope", nil, nil); !errors.Is(err, ErrUnknownCertificate) {
		t.Errorf("CheckSolve(nope) = %v, want ErrUnknownCertificate", err)
	}
}

// TestCheckSolveRunsTheRunsChain: check --solve uses the run's solver, so
// the certificate's challenge-provision scripts run (with ev.test set) and
// can veto, and challenge-cleanup follows, without any request to the CA.
func TestCheckSolveRunsTheRunsChain(t *testing.T) {
	e := newEnv(t)
	veto := filepath.Join(e.work.Dir, "veto.lua")
	if err := os.WriteFile(veto, []byte(`local acmehook = require("acmehook")
acmehook.on("challenge-provision", function(ev)
  assert(ev.test == true, "not a test event")
  if ev.challenge.identifier:find("^no%.") then error("not on my watch: " .. ev.challenge.identifier) end
end)
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := e.write(`
[[certificate]]
name = "chain"
domains = ["yes.chain.example.com", "no.chain.example.com"]
solver = "webroot"
scripts = ["events.lua", "veto.lua"]
`)
	pebble.Counter().Reset()
	got, err := CheckSolve(t.Context(), cfg, "chain", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, total := pebble.Counter().Snapshot(); total != 0 {
		t.Errorf("%d requests to the CA, want none", total)
	}
	if len(got) != 2 || got[0].Err != nil || !errors.Is(got[1].Err, ErrVetoed) || !strings.Contains(got[1].Err.Error(), "not on my watch: no.chain.example.com") {
		t.Fatalf("CheckSolve = %+v, want yes passed and no vetoed", got)
	}
	for _, id := range []string{"yes.chain.example.com", "no.chain.example.com"} {
		if ev := e.event("chain.challenge-provision." + id); ev["test"] != true {
			t.Errorf("challenge-provision for %s: test = %v, want true", id, ev["test"])
		}
		e.event("chain.challenge-cleanup." + id)
	}
}
