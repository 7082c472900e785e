package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/metrics"
)

func (c *cli) runCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Issue what is missing, renew what is due, retry pending deploys",
		Long: `Issues missing certificates, renews those due, retries pending deploys, and prints one line per certificate.
With --metrics-file (or [metrics] file) it then writes the metrics of the run and of every
certificate to that file, atomically, for node_exporter's textfile collector.`,
		Example: "  acmehook --config /etc/acmehook/acmehook.toml run\n  acmehook run --metrics-file /var/lib/node_exporter/textfile/acmehook.prom\n  acmehook run --dry-run",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.dryRun {
				return c.dryRunEngine(cmd.Context(), engine.RunOptions{})
			}
			if err := c.absMetricsFlag(); err != nil {
				return err
			}
			c.metrics = metrics.New()
			return c.runEngine(cmd.Context(), engine.RunOptions{})
		},
	}
	cmd.Flags().StringVar(&c.metricsPath, "metrics-file", "", "write the metrics to `FILE` after the run (Prometheus text format; docs/operations.md)")
	cmd.Flags().BoolVar(&c.dryRun, "dry-run", false, "order every certificate from the CA's staging directory with a throwaway account and storage; nothing is saved (docs/cli.md)")
	return cmd
}

func (c *cli) issueCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "issue NAME...",
		Short:   "Order a new certificate for each NAME now, even if the current one is good",
		Long:    "Orders a new certificate for each NAME now, even if the current one is good (the failure backoff and the reissue guard do not hold it).",
		Example: "  acmehook issue www",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("issue needs the name of a certificate (see acmehook list)")
			}
			return nil
		},
		ValidArgsFunction: c.certificateNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.dryRun {
				return c.dryRunEngine(cmd.Context(), engine.RunOptions{Names: args})
			}
			return c.runEngine(cmd.Context(), engine.RunOptions{Names: args, Force: true})
		},
	}
	cmd.Flags().BoolVar(&c.dryRun, "dry-run", false, "order from the CA's staging directory with a throwaway account and storage; nothing is saved (docs/cli.md)")
	return cmd
}

// runEngine runs the engine and prints one line per certificate.
func (c *cli) runEngine(ctx context.Context, opts engine.RunOptions) error {
	cfg, eng, closeAll, err := c.open()
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
	if path := c.metricsFile(cfg); path != "" && c.metrics != nil {
		if err := c.metrics.WriteFile(path); err != nil {
			c.log.Error("writing the metrics file", "error", err)
		}
	}
	return c.report(res)
}

// dryRunEngine runs engine.DryRun on the storage opened read-only (no
// lock: it works beside the daemon) and says what it did and what it did
// not save.
func (c *cli) dryRunEngine(ctx context.Context, opts engine.RunOptions) error {
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	st, err := c.openStore(cfg, true)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := engine.DryRun(ctx, engine.Options{Config: cfg, Store: st, Logger: c.log}, opts)
	if err != nil {
		if errors.Is(err, engine.ErrUnknownCertificate) {
			return usageError{err.Error()}
		}
		return err
	}
	if res.Staging {
		fmt.Fprintf(c.stdout, "dry run against the staging directory %s, with a throwaway account and storage\n", res.Directory)
	} else {
		fmt.Fprintf(c.stdout, "dry run against %s itself (the CA has no staging directory acmehook knows of; set [ca] staging_directory): its certificates are real, issued to a throwaway account and thrown away\n", res.Directory)
	}
	rerr := c.report(res.RunResult)
	for _, r := range res.Results {
		o := cfg.Certificate(r.Name).Output
		for _, p := range []struct{ key, path string }{{"cert", o.Cert}, {"key", o.Key}, {"chain", o.Chain}, {"fullchain", o.Fullchain}} {
			if p.path != "" {
				fmt.Fprintf(c.stdout, "dry run: %s: output.%s not written (a run writes %s)\n", r.Name, p.key, p.path)
			}
		}
	}
	fmt.Fprintln(c.stdout, "dry run: nothing was saved: the storage, the account, the output copies and the metrics are as they were")
	return rerr
}

// report prints one line per certificate of res, and on stderr which
// ones need attention.
func (c *cli) report(res *engine.RunResult) error {
	tw, flush := newTable(c.stdout)
	fmt.Fprintln(tw, "CERTIFICATE\tRESULT\tSERIAL\tNOT AFTER\tDETAIL")
	for _, r := range res.Results {
		detail := r.Reason
		if r.Err != nil {
			detail = r.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, resultWord(r), orDash(r.Serial), fmtTime(r.NotAfter), oneLine(detail))
	}
	flush()
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

func (c *cli) listCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show the certificates: names, issuer, expiry, next renewal, last result",
		Long: `Shows each configured certificate with its names, issuer, expiry, next renewal and last result.
It reads the storage only (also while the daemon runs) and does not contact the CA.
With --json it prints one JSON document instead (see docs/cli.md).`,
		Example: "  acmehook list\n  acmehook list --json | jq -r '.certificates[] | select(.next != \"none\") | .name'",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, fleet, err := c.listing(cmd.Context())
			if doc == nil {
				return err
			}
			// A certificate whose state cannot be read is listed with its
			// error, and the exit status is 1.
			if asJSON {
				return errors.Join(writeJSON(c.stdout, doc), err)
			}
			return errors.Join(doc.writeTable(c.stdout, fleet), err)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document (docs/cli.md, \"JSON output\")")
	return cmd
}

// listing is what list prints, from the storage alone, and the errors of
// the certificates whose state could not be read.
// On an etcd storage (a fleet, reported by the second result) it says
// which nodes deployed each certificate.
func (c *cli) listing(ctx context.Context) (*ListOutput, bool, error) {
	cfg, st, eng, closeAll, err := c.openReadOnly()
	if err != nil {
		return nil, false, err
	}
	defer closeAll()
	var errs []error
	doc := &ListOutput{Certificates: []CertificateStatus{}}
	for _, st := range eng.List(ctx) {
		if st.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.Name, st.Err))
		}
		doc.Certificates = append(doc.Certificates, certificateStatus(st))
	}
	if err := fleetDeploys(ctx, cfg, st.Backend(), doc); err != nil {
		errs = append(errs, fmt.Errorf("reading the fleet's deploy records: %w", err))
	}
	return doc, cfg.Store.Backend == config.BackendEtcd, errors.Join(errs...)
}

func (c *cli) checkCommand() *cobra.Command {
	var solve string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and start each plugin",
		Long: `Validates the configuration, starts each plugin, shows what it reports and checks
that every identifier has a solver able to validate it. When a certificate names a
profile, the CA's directory is read to warn about a profile it does not list (the
only request to the CA). With --solve, also has each identifier of certificate NAME
presented by its solver, self-checked as the CA would validate it, and cleaned up
(with a made-up token); the CA is not asked to validate anything.`,
		Example: "  acmehook --config /etc/acmehook/acmehook.toml check\n  acmehook check --solve www",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			// loadConfig has checked the files it names (a plugin missing or
			// not executable, a script, a CA bundle), as for every command.
			fmt.Fprintf(c.stdout, "%s: configuration is valid (%d certificates, %d plugins)\n", cfg.File(), len(cfg.Certificates), len(cfg.Plugins))
			// With --solve only the plugins NAME uses are started and checked.
			certs, only := cfg.Certificates, []string(nil)
			if solve != "" {
				cert := cfg.Certificate(solve)
				if cert == nil {
					return usagef("--solve %q: no such certificate in %s", solve, cfg.File())
				}
				certs = []*config.Certificate{cert}
				for _, id := range cert.Identifiers {
					if s := cert.SolverFor(id); !slices.Contains(only, s) {
						only = append(only, s)
					}
				}
			}
			out, caps, err := c.launchPlugins(ctx, cfg, only...)
			out.writeTable(c.stdout)
			if err != nil {
				return err
			}
			var capErrs []error
			for _, cert := range certs {
				capErrs = append(capErrs, cfg.CheckSolvers(cert, caps))
			}
			if err := errors.Join(capErrs...); err != nil {
				return fmt.Errorf("%w\n%w", config.ErrInvalid, err)
			}
			for _, cert := range certs {
				var parts []string
				for _, id := range cert.Identifiers {
					s := cert.SolverFor(id)
					parts = append(parts, fmt.Sprintf("%s by %s (%s)", id.Value, s, strings.Join(cert.ChallengeTypes(id, caps[s].Challenges), ", ")))
				}
				fmt.Fprintf(c.stdout, "certificate %s: %s\n", cert.Name, strings.Join(parts, "; "))
			}
			// A profile a certificate names is checked against the CA's
			// directory (its only CA request); a warning, not a failure.
			warnings, err := engine.ProfileWarnings(ctx, cfg)
			if err != nil {
				warnings = []string{"checking profiles: " + err.Error()}
			}
			for _, w := range warnings {
				fmt.Fprintln(c.stdout, "warning: "+w)
			}
			if solve != "" {
				return c.checkSolve(ctx, cfg, solve)
			}
			fmt.Fprintln(c.stdout, "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&solve, "solve", "", "present, self-check and clean up the identifiers of certificate `NAME`")
	cmd.RegisterFlagCompletionFunc("solve", c.certificateNames)
	return cmd
}

func (c *cli) pluginsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "plugins",
		Short:   "List the plugins with their versions and capabilities",
		Long:    "Starts each configured plugin and lists its version and capabilities. With --json it prints one JSON document instead (see docs/cli.md).",
		Example: "  acmehook plugins\n  acmehook plugins --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			out, _, err := c.launchPlugins(cmd.Context(), cfg)
			if asJSON {
				if jerr := writeJSON(c.stdout, out); jerr != nil {
					return jerr
				}
			} else {
				out.writeTable(c.stdout)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document (docs/cli.md, \"JSON output\")")
	return cmd
}

// launchPlugins launches every configured plugin, or those named in only
// (in parallel), and returns what they report, their capabilities, and the
// launch errors.
func (c *cli) launchPlugins(ctx context.Context, cfg *config.Config, only ...string) (*PluginsOutput, map[string]config.Capabilities, error) {
	statuses, stop := engine.LaunchAll(ctx, cfg, c.log, only...)
	defer func() {
		if err := stop(); err != nil {
			c.log.Warn("stopping plugins", "error", err)
		}
	}()
	var errs []error
	caps := map[string]config.Capabilities{}
	out := &PluginsOutput{Plugins: []PluginStatus{}}
	for _, s := range statuses {
		ps := PluginStatus{Name: s.Name, Path: cfg.Plugins[s.Name].Path, ChallengeTypes: []string{}, IdentifierTypes: []string{}}
		if s.Err != nil {
			errs = append(errs, s.Err)
			ps.Error = s.Err.Error()
		} else {
			info := s.Plugin.Info
			caps[s.Name] = s.Plugin.Capabilities()
			ps.Reports, ps.Version, ps.WaitsForPropagation = info.Name, info.Version, info.WaitsForPropagation
			ps.ChallengeTypes = append(ps.ChallengeTypes, info.ChallengeTypes...)
			ps.IdentifierTypes = append(ps.IdentifierTypes, info.IdentifierTypes...)
		}
		out.Plugins = append(out.Plugins, ps)
	}
	return out, caps, errors.Join(errs...)
}

var accountSubcommands = []string{"show", "update", "rollover", "deactivate"}

func (c *cli) accountCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account show|update|rollover|deactivate",
		Short: "Show the account, set its contacts, change its key, or deactivate it",
		Long: `Manages the ACME account of [ca] in the configuration. On the file storage every
subcommand needs the storage lock (stop acmehook daemon first); on etcd they work beside
the fleet's daemons, which take up a new account key by themselves (docs/fleet.md).`,
		DisableFlagsInUseLine: true,
		Example:               "  acmehook account show\n  acmehook account deactivate --yes",
		// Only a subcommand runs; without one (or with an unknown one)
		// this is a usage error.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("account needs one of %s", strings.Join(accountSubcommands, ", "))
			}
			return usagef("unknown subcommand %q (%s)", args[0], strings.Join(accountSubcommands, ", "))
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "show",
			Short: "The stored account, and its status and contacts at the CA",
			Long:  "Shows the stored account, and its status and contacts at the CA (looked up with onlyReturnExisting, so nothing is created).",
			Args:  noArgs,
			RunE: c.withAccount(func(ctx context.Context, cfg *config.Config, eng *engine.Engine) error {
				info, err := eng.ShowAccount(ctx)
				fmt.Fprintf(c.stdout, "directory:  %s\n", cfg.CA.Directory)
				if info.Stored.URL != "" {
					fmt.Fprintf(c.stdout, "account:    %s\nkey type:   %s\ncreated:    %s\n", info.Stored.URL, info.Stored.KeyType, fmtTime(info.Stored.CreatedAt))
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "status:     %s\ncontact:    %s\ntos agreed: %s\n", info.Remote.Status, strings.Join(info.Remote.Contact, ", "), tosAgreed(info))
				return nil
			}),
		},
		&cobra.Command{
			Use:   "update",
			Short: "Set the account's contacts to ca.email",
			Args:  noArgs,
			RunE: c.withAccount(func(ctx context.Context, _ *config.Config, eng *engine.Engine) error {
				a, err := eng.UpdateAccount(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "account %s: contact %s\n", a.URL, strings.Join(a.Contact, ", "))
				return nil
			}),
		},
		&cobra.Command{
			Use:   "rollover",
			Short: "Replace the account key (the old one is kept in the storage)",
			Long:  "Replaces the account key (RFC 8555 §7.3.5). The new key is stored first and the old one is kept beside it; if the CA refuses, the old key is made current again.",
			Args:  noArgs,
			RunE: c.withAccount(func(ctx context.Context, _ *config.Config, eng *engine.Engine) error {
				a, err := eng.RolloverAccount(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "account %s: new key in place\n", a.URL)
				return nil
			}),
		},
		c.deactivateCommand(),
	)
	return cmd
}

func (c *cli) deactivateCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:     "deactivate",
		Short:   "Deactivate the account at the CA (irreversible; needs --yes)",
		Long:    "Deactivates the account at the CA (RFC 8555 §7.3.6). This cannot be undone: the CA refuses every later request signed by the account's key. It needs --yes.",
		Example: "  acmehook account deactivate --yes",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := noArgs(cmd, args); err != nil {
				return err
			}
			if !yes {
				return usagef("deactivating the account cannot be undone; add --yes to do it")
			}
			return nil
		},
		RunE: c.withAccount(func(ctx context.Context, _ *config.Config, eng *engine.Engine) error {
			a, err := eng.DeactivateAccount(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "account %s: %s\n", a.URL, a.Status)
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "confirm the deactivation")
	return cmd
}

// withAccount is the RunE of an account subcommand: it opens the storage
// (taking the lock) and the engine, then runs f.
func (c *cli) withAccount(f func(context.Context, *config.Config, *engine.Engine) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, eng, closeAll, err := c.open()
		if err != nil {
			return err
		}
		defer closeAll()
		return f(cmd.Context(), cfg, eng)
	}
}

func (c *cli) scriptCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:                   "script test SCRIPT EVENT [--cert NAME]",
		Short:                 "Test a Lua script with a synthetic event",
		DisableFlagsInUseLine: true,
		Example:               "  acmehook script test scripts/nginx.lua renew --cert www",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("script needs a subcommand: script test SCRIPT EVENT [--cert NAME]")
			}
			return usagef("unknown subcommand %q: script test SCRIPT EVENT [--cert NAME]", args[0])
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.AddCommand(c.scriptTestCommand())
	return cmd
}

func (c *cli) scriptTestCommand() *cobra.Command {
	var certName string
	events := make([]string, len(event.Types))
	for i, e := range event.Types {
		events[i] = string(e)
	}
	cmd := &cobra.Command{
		Use:   "test SCRIPT EVENT",
		Short: "Fire a synthetic EVENT at a Lua script",
		Long: `Fires a synthetic EVENT (` + strings.Join(events, ", ") + `) at SCRIPT
with a throwaway certificate (ev.test = true). With --cert the event carries that
certificate's name and domains from the configuration. The configuration's [lua]
settings apply when the configuration file exists.`,
		Example: "  acmehook script test scripts/nginx.lua renew --cert www\n  acmehook script test scripts/failed_alert.lua failed",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("script test needs SCRIPT and EVENT")
			}
			return nil
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch len(args) {
			case 0:
				return []cobra.Completion{"lua"}, cobra.ShellCompDirectiveFilterFileExt
			case 1:
				return events, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.scriptTest(cmd.Context(), args[0], args[1], certName)
		},
	}
	cmd.Flags().StringVar(&certName, "cert", "", "certificate `name` from the configuration")
	cmd.RegisterFlagCompletionFunc("cert", c.certificateNames)
	return cmd
}

func (c *cli) scriptTest(ctx context.Context, scriptArg, eventArg, certName string) error {
	script, err := filepath.Abs(scriptArg) // the script host runs in the configuration's directory
	if err != nil {
		return err
	}
	ev := event.Type(eventArg)
	if !ev.Valid() {
		return usagef("unknown event %q; use one of %v", ev, event.Types)
	}
	t := engine.ScriptTest{Script: script, Event: ev, Cert: certName, Logger: c.log}
	// The configuration gives the scripts their [lua] settings; it is
	// optional unless --cert names one of its certificates.
	if _, statErr := os.Stat(c.g.config); certName != "" || statErr == nil {
		cfg, err := c.loadConfig()
		if err != nil {
			return err
		}
		if certName != "" && cfg.Certificate(certName) == nil {
			return usagef("no certificate %q in %s", certName, cfg.File())
		}
		t.Config = cfg
	}
	if err := engine.RunScriptTest(ctx, t); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s: %s handled without error\n", scriptArg, ev)
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

// tosAgreed says whether the account agreed to the CA's terms of service:
// what this client sent when it created the account (ca.agree_tos, stored
// with it), and what the CA reports when it reports it (RFC 8555 §7.1.2
// makes termsOfServiceAgreed optional in the server's answer, so a CA that
// leaves it out has not said "no").
func tosAgreed(info engine.AccountInfo) string {
	switch {
	case info.Remote.TermsOfServiceAgreed:
		return "yes (the CA reports it)"
	case info.Stored.TermsOfServiceAgreed:
		return "yes (agreed by acmehook when the account was created; the CA does not report it)"
	default:
		return "no"
	}
}
