package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/fleet"
	"github.com/acmehook/acmehook/engine/store"
)

// openStore opens the storage the configuration names.
func (c *cli) openStore(cfg *config.Config, readOnly bool) (*store.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := fleet.OpenStore(ctx, cfg.Store, c.storeOptions(readOnly))
	if err != nil {
		return nil, fmt.Errorf("opening storage: %w", err)
	}
	return st, nil
}

func (c *cli) storeOptions(readOnly bool) fleet.StoreOptions {
	return fleet.StoreOptions{ReadOnly: readOnly, Logger: c.log, Version: engine.BuildVersion()}
}

func (c *cli) nodesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the live nodes of a fleet (storage backend etcd)",
		Long: `Lists the live nodes of a fleet sharing an etcd storage: name, acmehook version, pid,
when its lease was last renewed, and the certificates whose lock it holds ("all" for
the node holding the storage lock). It reads the storage only.`,
		Example: "  acmehook nodes",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.nodes(cmd.Context())
		},
	}
}

func (c *cli) nodes(ctx context.Context) error {
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	st, err := c.openStore(cfg, true)
	if err != nil {
		return err
	}
	defer st.Close()
	nodes, err := fleet.Nodes(ctx, st.Backend())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERSION\tPID\tLAST SEEN\tCERTIFICATES")
	for _, n := range nodes {
		held := strings.Join(n.Certificates, ",")
		if n.Storage {
			held = "all (storage lock)"
		}
		if held == "" {
			held = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n.Name, n.Version, n.PID, n.LastSeen.UTC().Format(time.RFC3339), held)
	}
	return tw.Flush()
}

func (c *cli) storageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "storage",
		Short: "Storage operations: migrate",
		Args:  noArgs,
	}
	var to string
	migrate := &cobra.Command{
		Use:   "migrate --to etcd",
		Short: "Copy the file storage into etcd, verify it, leave the files",
		Long: `Copies the file storage at [storage] path (accounts, every certificate version, keys
moved aside, renewal state) into the etcd storage [storage] describes (backend = "etcd"),
which must be empty; reads every value back to verify it; leaves the files as they are.
No acmehook may run on either storage meanwhile (both locks are held). See docs/fleet.md.`,
		Example: "  acmehook storage migrate --to etcd",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.migrate(cmd.Context(), to)
		},
	}
	migrate.Flags().StringVar(&to, "to", "", "destination `backend`: etcd")
	cmd.AddCommand(migrate)
	return cmd
}

func (c *cli) migrate(ctx context.Context, to string) error {
	if to != config.BackendEtcd {
		return usagef("storage migrate: --to must be etcd (got %q)", to)
	}
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	if cfg.Store.Backend != config.BackendEtcd {
		return usagef("storage migrate: set [storage] backend = \"etcd\" with its endpoints and age keys, and path to the file storage to copy (%s)", cfg.File())
	}
	rep, err := fleet.MigrateStorage(ctx, cfg.Store, c.storeOptions(false))
	if err != nil {
		return fmt.Errorf("migrating %s to etcd: %w", cfg.Store.Path, err)
	}
	fmt.Fprintf(c.stdout, "copied and verified %d values (%d accounts, %d certificates) from %s to etcd %s%s; the files are unchanged\n",
		rep.Keys, rep.Accounts, rep.Certificates, cfg.Store.Path, strings.Join(cfg.Store.Endpoints, ","), cfg.Store.Prefix)
	return nil
}
