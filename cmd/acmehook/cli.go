package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/fleet"
	"github.com/acmehook/acmehook/engine/metrics"
	"github.com/acmehook/acmehook/engine/store"
)

// Exit statuses.
const (
	exitOK      = 0 // everything succeeded
	exitFailed  = 1 // a certificate, deploy or CA operation failed
	exitUsage   = 2 // bad command line or configuration
	defaultConf = "acmehook.toml"
	// configEnv names the environment variable that is --config's default.
	configEnv = "ACMEHOOK_CONFIG"
)

// globals are the flags every command accepts.
type globals struct {
	config    string
	logLevel  string
	logFormat string
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// cli carries what every command needs.
type cli struct {
	g      globals
	stdin  *os.File
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	// started is set once the command line is parsed and the command's
	// own code runs: an error before that is a usage error.
	started bool
	// metrics, when set, is the recorder of the engine open makes (run,
	// daemon); metricsPath is run's --metrics-file.
	metrics     *metrics.Metrics
	metricsPath string
	dryRun      bool // run and issue --dry-run
}

// run is the whole program: it parses args, runs the command and returns
// the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetIn(c.stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Without a command (flags alone, but not --help or --version): the
	// usage, on stderr, and exit 2.
	if cmd, _, err := root.Find(args); err == nil && cmd == root &&
		!slices.ContainsFunc(args, func(a string) bool { return slices.Contains([]string{"-h", "--help", "-v", "--version"}, a) }) {
		fmt.Fprint(stderr, root.UsageString())
		return exitUsage
	}
	cmd, err := root.ExecuteContextC(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errReported):
		return exitFailed
	case !c.started, errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
		return exitUsage
	case errors.Is(err, config.ErrInvalid):
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", cmd.CommandPath(), err)
		return exitFailed
	}
}

// errReported means the command has already told the user what failed.
var errReported = errors.New("failures reported")

// rootCommand builds the command tree: one grammar for every command,
// flags before or after arguments, --help everywhere.
func (c *cli) rootCommand() *cobra.Command {
	conf := os.Getenv(configEnv)
	if conf == "" {
		conf = defaultConf
	}
	root := &cobra.Command{
		Use:   "acmehook",
		Short: "acmehook obtains and renews TLS certificates from an ACME CA",
		Long: `acmehook obtains and renews TLS certificates from an ACME CA (RFC 8555), as
acmehook.toml describes: solver plugins answer the challenges, Lua scripts deploy.

Exit status: 0 all good, 1 a certificate, deploy or CA operation failed,
2 usage or configuration error.`,
		Example: `  acmehook check
  acmehook check --solve www
  acmehook run
  acmehook --config /etc/acmehook/acmehook.toml run --log-format json
  acmehook issue www
  acmehook list --json
  acmehook explain www
  acmehook revoke www --reason keyCompromise
  acmehook daemon
  acmehook script test scripts/nginx.lua renew --cert www
  acmehook account show
  acmehook completion bash > /etc/bash_completion.d/acmehook`,
		Version:       engine.BuildVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if err := c.setupLog(); err != nil {
				return err
			}
			c.started = true
			return nil
		},
	}
	root.SetVersionTemplate("acmehook {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	pf := root.PersistentFlags()
	// --help is persistent, so that it is a known flag at every level of
	// the tree, wherever it stands: "acmehook -h account show" too.
	pf.BoolP("help", "h", false, "help for the command")
	pf.StringVar(&c.g.config, "config", conf, "configuration `file` ($"+configEnv+")")
	pf.StringVar(&c.g.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	pf.StringVar(&c.g.logFormat, "log-format", "text", "log `format`: text or json")
	root.AddCommand(
		c.runCommand(), c.issueCommand(), c.listCommand(), c.explainCommand(), c.revokeCommand(),
		c.daemonCommand(), c.checkCommand(), c.pluginsCommand(), c.accountCommand(), c.scriptCommand(),
		c.versionCommand(), c.nodesCommand(), c.storageCommand(),
	)
	return root
}

// noArgs rejects positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usagef("%s takes no arguments (got %s)", cmd.Name(), strings.Join(args, " "))
	}
	return nil
}

// setupLog builds the logger from the global flags.
func (c *cli) setupLog() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.g.logLevel)); err != nil {
		return usagef("--log-level %q: use debug, info, warn or error", c.g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.g.logFormat {
	case "text":
		c.log = slog.New(slog.NewTextHandler(c.stderr, opts))
	case "json":
		c.log = slog.New(slog.NewJSONHandler(c.stderr, opts))
	default:
		return usagef("--log-format %q: use text or json", c.g.logFormat)
	}
	return nil
}

// interactive reports whether stdin is a terminal, where a person can
// answer a confirmation.
func (c *cli) interactive() bool { return c.stdin != nil && term.IsTerminal(int(c.stdin.Fd())) }

// confirm asks question on stderr and reads the answer from stdin; only
// "y" or "yes" agrees.
func (c *cli) confirm(question string) bool {
	fmt.Fprintf(c.stderr, "%s [y/N] ", question)
	var answer string
	fmt.Fscanln(c.stdin, &answer)
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes"
}

// loadConfig loads --config and checks the files it names. Every path of
// the configuration is absolute once loaded; plugins are started, dnsexec
// runs its program and scripts run in the configuration file's directory
// (cfg.Dir()), so relative paths in plugin configuration and in scripts
// mean the same wherever acmehook is started from. acmehook's own working
// directory is never changed.
func (c *cli) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(c.g.config)
	if err != nil {
		if errors.Is(err, config.ErrInvalid) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	// The files it names, as engine.New checks them: every command, check
	// included, accepts the same configurations, before storage is opened.
	if err := cfg.CheckFiles(); err != nil {
		return nil, fmt.Errorf("%w\n%w", config.ErrInvalid, err)
	}
	return cfg, nil
}

// open loads the configuration, opens the store and makes an engine; the
// returned function closes both.
func (c *cli) open() (*config.Config, *engine.Engine, func(), error) {
	cfg, _, eng, closeAll, err := c.openWith(false)
	if errors.Is(err, store.ErrLocked) {
		err = fmt.Errorf("%w; if acmehook daemon holds it, stop the daemon, run this command, and start it again (list and explain work beside it)", err)
	}
	return cfg, eng, closeAll, err
}

// openReadOnly is open without taking the storage lock, for commands that
// only read and so work beside a running daemon, which holds it.
func (c *cli) openReadOnly() (*config.Config, *store.Store, *engine.Engine, func(), error) {
	return c.openWith(true)
}

func (c *cli) openWith(readOnly bool) (*config.Config, *store.Store, *engine.Engine, func(), error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st, coord, closeStore, err := c.openNode(cfg, readOnly)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var rec metrics.Recorder
	if c.metrics != nil {
		rec = c.metrics
	}
	// On etcd, a command that may order (run, issue) publishes its
	// http-01 and tls-alpn-01 challenges to the fleet's daemons, which
	// present them too (any node answers).
	var relay engine.Relay
	closeRelay := func() {}
	if !readOnly && cfg.Store.Backend == config.BackendEtcd {
		r, err := fleet.StartRelay(context.Background(), cfg.Store, fleet.RelayOptions{Logger: c.log})
		if err != nil {
			closeStore()
			return nil, nil, nil, nil, fmt.Errorf("starting the challenge relay: %w", err)
		}
		relay, closeRelay = r, func() { r.Close() }
	}
	eng, err := engine.New(engine.Options{Config: cfg, Store: st, Logger: c.log, Metrics: rec, Relay: relay, Coordinator: coord})
	if err != nil {
		closeRelay()
		closeStore()
		return nil, nil, nil, nil, err
	}
	return cfg, st, eng, func() {
		if err := eng.Close(); err != nil {
			c.log.Warn("stopping plugins", "error", err)
		}
		closeRelay()
		closeStore()
	}, nil
}

// certificateNames completes a certificate name from the configuration
// (nothing when it cannot be loaded).
func (c *cli) certificateNames(_ *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	cfg, err := config.Load(c.g.config)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, cert := range cfg.Certificates {
		names = append(names, cobra.CompletionWithDesc(cert.Name, strings.Join(cert.Domains, ",")))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Long:  "Prints the version: set at build time by make build (the variable github.com/acmehook/acmehook/engine.Version), or taken from the Go build info. Same as acmehook --version.",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(c.stdout, "acmehook", engine.BuildVersion())
			return nil
		},
	}
}
