package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

func (c *cli) cmdExplain(ctx context.Context, args []string) error {
	fs := c.flags("explain", "acmehook explain NAME\n\nSays when the certificate NAME will be renewed and why: its validity, the lifetime\nrule, the CA's renewal window (ARI) and the time chosen in it, revocation, the last\nerror and backoff, the reissue guard, and the next check of the daemon.\nIt reads the storage only (also while the daemon runs) and does not contact the CA.\n\nExample:\n  acmehook explain www")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("explain needs the name of one certificate (see acmehook list)")
	}
	name := fs.Arg(0)
	cfg, _, eng, closeAll, err := c.openReadOnly()
	if err != nil {
		return err
	}
	defer closeAll()
	st, err := eng.Explain(ctx, name)
	if errors.Is(err, engine.ErrUnknownCertificate) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "certificate %s (%s)\n%s", name, strings.Join(cfg.Certificate(name).Domains, ", "), st.Explain())
	return nil
}

func (c *cli) cmdRevoke(ctx context.Context, args []string) error {
	fs := c.flags("revoke", "acmehook revoke NAME [--reason REASON] [--with-cert-key]\n\nRevokes the current certificate of NAME at the CA, raises revoke to its scripts and\nmarks it for replacement by the next run. It needs the storage lock: while acmehook daemon\nruns, stop it, revoke, and start it again (at start it replaces the revoked certificate).\nFor keyCompromise the key is moved aside and never used again, even with reuse_key.\n\nExamples:\n  acmehook revoke www --reason superseded\n  acmehook revoke www --reason keyCompromise --with-cert-key")
	reason := fs.String("reason", "unspecified", "revocation `reason`: "+strings.Join(engine.RevocationReasonNames(), ", "))
	withKey := fs.Bool("with-cert-key", false, "sign the request with the certificate's key instead of the account key")
	pos, err := c.parseInterspersed(fs, args) // flags may come before or after NAME
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("revoke needs the name of one certificate (see acmehook list)")
	}
	code, err := engine.ParseRevocationReason(*reason)
	if err != nil {
		return usageError{err.Error()}
	}
	_, eng, closeAll, err := c.open()
	if err != nil {
		return err
	}
	defer closeAll()
	res, err := eng.Revoke(ctx, pos[0], engine.RevokeOptions{Reason: code, WithCertKey: *withKey})
	if errors.Is(err, engine.ErrUnknownCertificate) {
		return usageError{err.Error()}
	}
	if res.Revoked {
		what := "revoked"
		if res.AlreadyRevoked {
			what = "was already revoked"
		}
		fmt.Fprintf(c.stdout, "%s: serial %s %s (%s); the next run replaces it\n", pos[0], res.Serial, what, engine.RevocationReasonName(code))
		if res.KeyMovedTo != "" {
			fmt.Fprintf(c.stdout, "%s: key moved aside to %s; it will not be used again\n", pos[0], res.KeyMovedTo)
		}
	}
	return err
}

func (c *cli) cmdDaemon(ctx context.Context, args []string) error {
	fs := c.flags("daemon", "acmehook daemon\n\nRuns until stopped: checks every certificate now, then each one again when its\nrenewal decision says (see acmehook explain), issuing and renewing as run does.\nSIGHUP re-reads the configuration (an invalid one is logged and the old one kept);\nSIGTERM or SIGINT stops it after cleaning up in-flight challenges.\n\nExample:\n  acmehook --config /etc/acmehook/acmehook.toml daemon --log-format json")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs, "daemon"); err != nil {
		return err
	}
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
	st, err := store.Open(cfg.Storage, store.Options{Logger: c.log})
	if err != nil {
		return fmt.Errorf("opening storage: %w", err)
	}
	defer st.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return engine.Daemon(ctx, engine.DaemonOptions{
		Options: engine.Options{Config: cfg, Store: st, Logger: c.log},
		Load:    func() (*config.Config, error) { return config.Load(path) },
		Reload:  hup,
	})
}
