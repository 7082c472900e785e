package main

import (
	"context"
	"fmt"
	"slices"
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

// openNode opens the storage for a command: read-only (openStore), or to
// write; on etcd a writing command claims each certificate's lock beside
// the fleet's daemons (fleet.OpenNode without split).
func (c *cli) openNode(cfg *config.Config, readOnly bool) (*store.Store, engine.Coordinator, func(), error) {
	if readOnly {
		st, err := c.openStore(cfg, true)
		if err != nil {
			return nil, nil, nil, err
		}
		return st, nil, func() { st.Close() }, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, coord, closeAll, err := fleet.OpenNode(ctx, cfg.Store, c.storeOptions(false), false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening storage: %w", err)
	}
	return st, coord, closeAll, nil
}

func (c *cli) storeOptions(readOnly bool) fleet.StoreOptions {
	return fleet.StoreOptions{ReadOnly: readOnly, Logger: c.log, Version: engine.BuildVersion()}
}

func (c *cli) nodesCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the live nodes of a fleet (storage backend etcd)",
		Long: `Lists the live nodes of a fleet sharing an etcd storage: name, acmehook version, pid,
when its lease was last renewed, how many of this configuration's certificates it owns
(orders and renews), and the certificates it is working on now (whose lock it holds).
It reads the storage only. With --json it prints one JSON document (see docs/cli.md).`,
		Example: "  acmehook nodes\n  acmehook nodes --json | jq -r '.nodes[].name'",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.nodes(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document (docs/cli.md, \"JSON output\")")
	return cmd
}

// NodesOutput is what `acmehook nodes --json` prints.
type NodesOutput struct {
	// Nodes are the live nodes, sorted by name.
	Nodes []fleet.Node `json:"nodes"`
}

func (c *cli) nodes(ctx context.Context, asJSON bool) error {
	cfg, err := c.loadConfig()
	if err != nil {
		return err
	}
	st, err := c.openStore(cfg, true)
	if err != nil {
		return err
	}
	defer st.Close()
	nodes, err := fleet.Nodes(ctx, st.Backend(), certNames(cfg))
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(c.stdout, NodesOutput{Nodes: nodes})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERSION\tPID\tLAST SEEN\tOWNS\tWORKING ON")
	for _, n := range nodes {
		working := strings.Join(n.WorkingOn, ",")
		if n.Storage {
			working = strings.Join(append([]string{"all (storage lock)"}, n.WorkingOn...), ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", n.Name, orDash(n.Version), n.PID, n.LastSeen.UTC().Format(time.RFC3339), len(n.Certificates), orDash(working))
	}
	return tw.Flush()
}

func certNames(cfg *config.Config) []string {
	names := make([]string, len(cfg.Certificates))
	for i, c := range cfg.Certificates {
		names[i] = c.Name
	}
	return names
}

// fleetDeploys fills in, on an etcd storage, which live nodes deployed
// each certificate's current version (list's DEPLOYED column, and
// "deployed" in list --json).
func fleetDeploys(ctx context.Context, cfg *config.Config, b store.Backend, doc *ListOutput) error {
	if cfg.Store.Backend != config.BackendEtcd {
		return nil
	}
	nodes, err := fleet.Nodes(ctx, b, nil)
	if err != nil {
		return err
	}
	recs, err := fleet.Deploys(ctx, b)
	if err != nil {
		return err
	}
	var live []string
	for _, n := range nodes {
		if n.Daemon && !slices.Contains(live, n.Name) {
			live = append(live, n.Name)
		}
	}
	for i := range doc.Certificates {
		s := &doc.Certificates[i]
		if s.Current == nil {
			continue
		}
		d := &FleetDeploy{Nodes: len(live), Lagging: []NodeDeploy{}}
		for _, n := range live {
			nd := NodeDeploy{Node: n, Result: "none"}
			for _, r := range recs[s.Name] {
				if r.Node == n {
					nd = NodeDeploy{Node: n, Version: r.Version, Serial: r.Serial, Result: r.Result, Time: utcPtr(r.Time), Error: r.Error}
				}
			}
			if nd.Result == "ok" && nd.Version == s.Current.Version {
				d.Current++
				continue
			}
			d.Lagging = append(d.Lagging, nd)
		}
		s.Deployed = d
	}
	return nil
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
