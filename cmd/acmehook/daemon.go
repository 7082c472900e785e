package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/fleet"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/store"
)

func (c *cli) explainCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "explain NAME",
		Short: "Say when NAME will be renewed and why",
		Long: `Says when the certificate NAME will be renewed and why: its validity, the lifetime
rule, the CA's renewal window (ARI) and the time chosen in it, revocation, the last
error and backoff, the reissue guard, and the next check of the daemon.
It reads the storage only (also while the daemon runs) and does not contact the CA.
With --json it prints one JSON document instead (see docs/cli.md).`,
		Example: "  acmehook explain www\n  acmehook explain www --json",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("explain needs the name of one certificate (see acmehook list)")
			}
			return nil
		},
		ValidArgsFunction: c.certificateNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			cfg, _, eng, closeAll, err := c.openReadOnly()
			if err != nil {
				return err
			}
			defer closeAll()
			st, err := eng.Explain(cmd.Context(), name)
			if errors.Is(err, engine.ErrUnknownCertificate) {
				return usageError{err.Error()}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c.stdout, explainOutput(st))
			}
			fmt.Fprintf(c.stdout, "certificate %s (%s)\n%s", name, strings.Join(cfg.Certificate(name).Domains, ", "), st.Explain())
			if cur := st.Current; cur != nil {
				// The profile the CA applied (the order's), as list --json.
				fmt.Fprintf(c.stdout, "%-17s%s\n", "profile:", cmp.Or(cur.Profile, "none named by the CA"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document (docs/cli.md, \"JSON output\")")
	return cmd
}

func (c *cli) revokeCommand() *cobra.Command {
	var (
		reason  string
		withKey bool
		yes     bool
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke NAME's certificate; the next run replaces it",
		Long: `Revokes the current certificate of NAME at the CA, raises revoke to its scripts and
marks it for replacement by the next run. It needs the storage lock: while acmehook daemon
runs, stop it, revoke, and start it again (at start it replaces the revoked certificate).
For keyCompromise the key is moved aside and never used again, even with reuse_key.
Revocation cannot be undone: on a terminal acmehook asks first; otherwise (cron, scripts)
it needs --yes.`,
		Example: "  acmehook revoke www --reason superseded\n  acmehook revoke www --reason keyCompromise --with-cert-key --yes",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("revoke needs the name of one certificate (see acmehook list)")
			}
			return nil
		},
		ValidArgsFunction: c.certificateNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			code, err := engine.ParseRevocationReason(reason)
			if err != nil {
				return usageError{err.Error()}
			}
			if !yes && !c.interactive() {
				return usagef("revoking cannot be undone; add --yes to revoke %s without a terminal to confirm on", name)
			}
			cfg, eng, closeAll, err := c.open()
			if err != nil {
				return err
			}
			defer closeAll()
			cert := cfg.Certificate(name)
			if cert == nil {
				return usagef("%v: %q", engine.ErrUnknownCertificate, name)
			}
			if !yes && !c.confirm(fmt.Sprintf("Revoke the current certificate of %s (%s) at %s, reason %s? This cannot be undone.",
				name, strings.Join(cert.Domains, ", "), cfg.CA.Directory, engine.RevocationReasonName(code))) {
				return usagef("not revoked: not confirmed")
			}
			res, err := eng.Revoke(cmd.Context(), name, engine.RevokeOptions{Reason: code, WithCertKey: withKey})
			if errors.Is(err, engine.ErrUnknownCertificate) {
				return usageError{err.Error()}
			}
			if res.Revoked {
				what := "revoked"
				if res.AlreadyRevoked {
					what = "was already revoked"
				}
				fmt.Fprintf(c.stdout, "%s: serial %s %s (%s); the next run replaces it\n", name, res.Serial, what, engine.RevocationReasonName(code))
				if res.KeyMovedTo != "" {
					fmt.Fprintf(c.stdout, "%s: key moved aside to %s; it will not be used again\n", name, res.KeyMovedTo)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "unspecified", "revocation `reason`: "+strings.Join(engine.RevocationReasonNames(), ", "))
	f.BoolVar(&withKey, "with-cert-key", false, "sign the request with the certificate's key instead of the account key")
	f.BoolVarP(&yes, "yes", "y", false, "revoke without asking (needed when stdin is not a terminal)")
	cmd.RegisterFlagCompletionFunc("reason", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return engine.RevocationReasonNames(), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (c *cli) daemonCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Keep running: renew each certificate when due (SIGHUP reloads the config)",
		Long: `Runs until stopped: checks every certificate now, then each one again when its
renewal decision says (see acmehook explain), issuing and renewing as run does.
SIGHUP re-reads the configuration (an invalid one is logged and the old one kept);
SIGTERM or SIGINT stops it after cleaning up in-flight challenges.`,
		Example: "  acmehook --config /etc/acmehook/acmehook.toml daemon --log-format json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.daemon(cmd.Context())
		},
	}
}

func (c *cli) daemon(ctx context.Context) error {
	// The configuration is read again on SIGHUP, after loadConfig changed
	// into its directory: keep its absolute path.
	path, err := filepath.Abs(c.g.config)
	if err != nil {
		return err
	}
	c.g.config = path
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	m := metrics.New()
	mctx, stopMetrics := context.WithCancel(ctx)
	waitMetrics, err := c.serveMetrics(mctx, cfg, m)
	if err != nil {
		stopMetrics()
		return err
	}
	defer waitMetrics()
	defer stopMetrics()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// On etcd every node answers the challenges the others publish (any
	// node answers), through the plugin processes its engines use.
	var relay engine.Relay
	var plugins *engine.Plugins
	if cfg.Store.Backend == config.BackendEtcd {
		plugins = engine.NewPlugins(cfg, c.log)
		defer plugins.Close()
		r, err := fleet.StartRelay(ctx, cfg.Store, fleet.RelayOptions{Answerer: plugins, Logger: c.log})
		if err != nil {
			return fmt.Errorf("starting the challenge relay: %w", err)
		}
		defer r.Close()
		relay = r
	}
	// SIGHUP loads the configuration here too: the relay presents with it
	// at once. The daemon reloads it itself.
	var mu sync.Mutex
	current := cfg
	reload := make(chan os.Signal, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-hup:
				if ncfg, err := config.Load(path); err == nil && ncfg.Store.Where() == cfg.Store.Where() {
					mu.Lock()
					current = ncfg
					mu.Unlock()
					if plugins != nil {
						plugins.Reconfigure(ncfg)
					}
				}
				select {
				case reload <- s:
				default:
				}
			}
		}
	}()
	// On etcd, every node's daemon works on the certificates it owns among
	// the live nodes and deploys the others' (docs/fleet.md).
	return fleet.Serve(ctx, cfg.Store, c.storeOptions(false), func(ctx context.Context, st *store.Store, coord engine.Coordinator) error {
		mu.Lock()
		cfg := current
		mu.Unlock()
		return engine.Daemon(ctx, engine.DaemonOptions{
			Options: engine.Options{Config: cfg, Store: st, Logger: c.log, Metrics: m, Relay: relay, Plugins: plugins, Coordinator: coord},
			Load: func() (*config.Config, error) {
				ncfg, err := config.Load(path)
				if err == nil && ncfg.Metrics.Listen != cfg.Metrics.Listen {
					c.log.Warn("metrics.listen changed; restart the daemon to serve on the new address", "serving", cfg.Metrics.Listen, "configured", ncfg.Metrics.Listen)
				}
				return ncfg, err
			},
			Reload: reload,
		})
	})
}
