package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
)

func (c *cli) cmdRun(ctx context.Context, args []string) error {
	fs := c.flags("run", "acmehook run\n\nIssues missing certificates, renews those due, retries pending deploys.\n\nExample:\n  acmehook --config /etc/acmehook/acmehook.toml run")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, "run"); err != nil {
		return err
	}
	return c.runEngine(ctx, engine.RunOptions{})
}

func (c *cli) cmdIssue(ctx context.Context, args []string) error {
	fs := c.flags("issue", "acmehook issue NAME...\n\nOrders a new certificate for each NAME now, even if the current one is good.\n\nExample:\n  acmehook issue www")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("issue needs the name of a certificate (see acmehook list)")
	}
	return c.runEngine(ctx, engine.RunOptions{Names: fs.Args(), Force: true})
}

// runEngine runs the engine and prints one line per certificate.
func (c *cli) runEngine(ctx context.Context, opts engine.RunOptions) error {
	_, eng, closeAll, err := c.open()
	if err != nil {
		return err
	}
	defer closeAll()
	res, err := eng.Run(ctx, opts)
	if err != nil {
		if errors.Is(err, engine.ErrUnknownCertificate) {
			return usageError{err.Error()}
		}
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tRESULT\tSERIAL\tNOT AFTER\tDETAIL")
	for _, r := range res.Results {
		detail := r.Reason
		if r.Err != nil {
			detail = r.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, resultWord(r), orDash(r.Serial), fmtTime(r.NotAfter), oneLine(detail))
	}
	tw.Flush()
	if !res.OK() {
		failed := res.Failed()
		names := make([]string, len(failed))
		for i, r := range failed {
			names[i] = r.Name
		}
		fmt.Fprintf(c.stderr, "acmehook: %d of %d certificates need attention: %s\n", len(failed), len(res.Results), strings.Join(names, ", "))
		return errReported
	}
	return nil
}

func resultWord(r engine.Result) string {
	switch {
	case errors.Is(r.Err, engine.ErrDeploy):
		return string(r.Action) + ", deploy failed"
	case r.Err != nil:
		return "failed"
	case r.Action == engine.ActionNone:
		return "current"
	}
	return string(r.Action)
}

func (c *cli) cmdList(ctx context.Context, args []string) error {
	fs := c.flags("list", "acmehook list\n\nShows each configured certificate with its names, issuer, expiry, next renewal and last result.\n\nExample:\n  acmehook list")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, "list"); err != nil {
		return err
	}
	_, _, eng, closeAll, err := c.openReadOnly()
	if err != nil {
		return err
	}
	defer closeAll()
	var errs []error
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNAMES\tISSUER\tNOT AFTER\tNEXT RENEWAL\tLAST RESULT")
	for _, st := range eng.List(ctx) {
		if st.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.Name, st.Err))
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\terror: %s\n", st.Name, strings.Join(st.Domains, ","), oneLine(st.Err.Error()))
			continue
		}
		issuer, notAfter := "-", "-"
		if cur := st.Current; cur != nil {
			issuer, notAfter = cur.Issuer, fmtTime(cur.NotAfter)
		}
		last := "-"
		if ev := st.LastEvent; ev != nil {
			last = fmt.Sprintf("%s %s %s", ev.Name, ev.Result, ev.Time.UTC().Format("2006-01-02 15:04"))
			if st.PendingDeploy {
				last += " (deploy pending)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.Name, strings.Join(st.Domains, ","), issuer, notAfter, nextRenewal(st), last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// nextRenewal is list's NEXT RENEWAL column: when a run orders next.
func nextRenewal(st engine.Status) string {
	switch {
	case st.Next == engine.NextIssue:
		return "now (no certificate)"
	case st.Due():
		return "now (" + st.Reason + ")"
	case st.Next == engine.NextHold:
		return fmtTime(st.At) + " (held: " + st.Reason + ")"
	}
	return fmtTime(st.Decision.At)
}

func (c *cli) cmdCheck(ctx context.Context, args []string) error {
	fs := c.flags("check", "acmehook check [--solve NAME]\n\nValidates the configuration, starts each plugin, shows what it reports and checks\nthat every identifier has a solver able to validate it. With --solve, also has each\nidentifier of certificate NAME presented by its solver, self-checked as the CA\nwould validate it, and cleaned up (with a made-up token). The CA is not contacted.\n\nExamples:\n  acmehook --config /etc/acmehook/acmehook.toml check\n  acmehook check --solve www")
	solve := fs.String("solve", "", "present, self-check and clean up the identifiers of certificate `NAME`")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, "check"); err != nil {
		return err
	}
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: configuration is valid (%d certificates, %d plugins)\n", cfg.File(), len(cfg.Certificates), len(cfg.Plugins))
	caps, err := c.showPlugins(ctx, cfg)
	if err != nil {
		return err
	}
	if err := cfg.CheckSolverCapabilities(caps); err != nil {
		return fmt.Errorf("%w\n%w", config.ErrInvalid, err)
	}
	for _, cert := range cfg.Certificates {
		var parts []string
		for _, id := range cert.Identifiers {
			s := cert.SolverFor(id)
			parts = append(parts, fmt.Sprintf("%s by %s (%s)", id.Value, s, strings.Join(cert.ChallengeTypes(id, caps[s].Challenges), ", ")))
		}
		fmt.Fprintf(c.stdout, "certificate %s: %s\n", cert.Name, strings.Join(parts, "; "))
	}
	if *solve != "" {
		return c.checkSolve(ctx, cfg, *solve)
	}
	fmt.Fprintln(c.stdout, "ok")
	return nil
}

func (c *cli) cmdPlugins(ctx context.Context, args []string) error {
	fs := c.flags("plugins", "acmehook plugins\n\nStarts each configured plugin and lists its version and capabilities.\n\nExample:\n  acmehook plugins")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, "plugins"); err != nil {
		return err
	}
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	_, err = c.showPlugins(ctx, cfg)
	return err
}

// showPlugins launches every configured plugin (in parallel), prints a
// table of what they report and returns their capabilities.
func (c *cli) showPlugins(ctx context.Context, cfg *config.Config) (map[string]config.Capabilities, error) {
	statuses, stop := engine.LaunchAll(ctx, cfg, c.log)
	defer func() {
		if err := stop(); err != nil {
			c.log.Warn("stopping plugins", "error", err)
		}
	}()
	var errs []error
	caps := map[string]config.Capabilities{}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tREPORTS\tVERSION\tCHALLENGES\tIDENTIFIERS\tWAITS FOR PROPAGATION\tPATH")
	for _, s := range statuses {
		n := s.Name
		if s.Err != nil {
			errs = append(errs, s.Err)
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%s (error: %s)\n", n, cfg.Plugins[n].Path, oneLine(s.Err.Error()))
			continue
		}
		p := s.Plugin
		caps[n] = p.Capabilities()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\n", n, p.Info.Name, p.Info.Version, strings.Join(p.Info.ChallengeTypes, ","), strings.Join(p.Info.IdentifierTypes, ","), p.Info.WaitsForPropagation, cfg.Plugins[n].Path)
	}
	tw.Flush()
	return caps, errors.Join(errs...)
}

func (c *cli) cmdAccount(ctx context.Context, args []string) error {
	fs := c.flags("account", "acmehook account show|update|rollover|deactivate\n\n  show        the stored account and what the CA knows of it\n  update      set the account's contacts to ca.email\n  rollover    replace the account key (the old one is kept in the storage)\n  deactivate  deactivate the account at the CA (irreversible)\n\nExample:\n  acmehook account show")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("account needs one of show, update, rollover, deactivate")
	}
	sub := fs.Arg(0)
	if !slices.Contains([]string{"show", "update", "rollover", "deactivate"}, sub) {
		return usagef("account: unknown subcommand %q (show, update, rollover, deactivate)", sub)
	}
	cfg, eng, closeAll, err := c.open()
	if err != nil {
		return err
	}
	defer closeAll()
	switch sub {
	case "show":
		info, err := eng.ShowAccount(ctx)
		fmt.Fprintf(c.stdout, "directory:  %s\n", cfg.CA.Directory)
		if info.Stored.URL != "" {
			fmt.Fprintf(c.stdout, "account:    %s\nkey type:   %s\ncreated:    %s\n", info.Stored.URL, info.Stored.KeyType, fmtTime(info.Stored.CreatedAt))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "status:     %s\ncontact:    %s\ntos agreed: %t\n", info.Remote.Status, strings.Join(info.Remote.Contact, ", "), info.Remote.TermsOfServiceAgreed)
	case "update":
		a, err := eng.UpdateAccount(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "account %s: contact %s\n", a.URL, strings.Join(a.Contact, ", "))
	case "rollover":
		a, err := eng.RolloverAccount(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "account %s: new key in place\n", a.URL)
	case "deactivate":
		a, err := eng.DeactivateAccount(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "account %s: %s\n", a.URL, a.Status)
	}
	return nil
}

func (c *cli) cmdScript(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "test" {
		return usagef("script needs a subcommand: script test SCRIPT EVENT [--cert NAME]")
	}
	fs := c.flags("script test", "acmehook script test SCRIPT EVENT [--cert NAME]\n\nFires a synthetic EVENT at SCRIPT with a throwaway certificate (ev.test = true).\nWith --cert the event carries that certificate's name and domains from the configuration.\n\nExamples:\n  acmehook script test scripts/nginx.lua renew --cert www\n  acmehook script test scripts/failed_alert.lua failed")
	certName := fs.String("cert", "", "certificate `name` from the configuration")
	pos, err := c.parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("script test needs SCRIPT and EVENT")
	}
	script, err := filepath.Abs(pos[0]) // before loadConfig changes directory
	if err != nil {
		return err
	}
	ev := event.Type(pos[1])
	if !ev.Valid() {
		return usagef("unknown event %q; use one of %v", ev, event.Types)
	}
	t := engine.ScriptTest{Script: script, Event: ev, Cert: *certName, Logger: c.log}
	// The configuration gives the scripts their [lua] settings; it is
	// optional unless --cert names one of its certificates.
	if _, statErr := os.Stat(c.g.config); *certName != "" || statErr == nil {
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		if *certName != "" && cfg.Certificate(*certName) == nil {
			return usagef("no certificate %q in %s", *certName, cfg.File())
		}
		t.Config = cfg
	}
	if err := engine.RunScriptTest(ctx, t); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: %s handled without error\n", pos[0], ev)
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 MST")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a multi-line error on one table row.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }
