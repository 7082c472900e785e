package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
)

// Exit statuses.
const (
	exitOK      = 0 // everything succeeded
	exitFailed  = 1 // a certificate, deploy or CA operation failed
	exitUsage   = 2 // bad command line or configuration
	defaultConf = "acmehook.toml"
)

const usage = `acmehook obtains and renews TLS certificates from an ACME CA.

Usage:
  acmehook [--config FILE] [--log-level LEVEL] [--log-format text|json] COMMAND [ARGS]

Commands:
  run                      issue what is missing, renew what is due, retry pending deploys
  issue NAME               order a new certificate for NAME now, even if the current one is good
  list                     show the certificates: names, issuer, expiry, next renewal, last result
  explain NAME             say when NAME will be renewed and why (ARI window, lifetime, backoff, guard)
  revoke NAME [--reason REASON] [--with-cert-key]
                           revoke NAME's certificate; the next run replaces it
  daemon                   keep running: renew each certificate when due (SIGHUP reloads the config)
  check [--solve NAME]     validate the configuration and start each plugin (no CA contact);
                           --solve: present, self-check and clean up NAME's challenges
  plugins                  list the plugins with their versions and capabilities
  account show|update|rollover|deactivate
                           show the account, set its contacts from ca.email, change its key, deactivate it
  script test SCRIPT EVENT [--cert NAME]
                           fire a synthetic EVENT (issued, renew, revoke, failed,
                           challenge-provision, challenge-cleanup) at a Lua script
  version                  print the version

Global flags (before or after the command):
  --config FILE            configuration file (default ./acmehook.toml)
  --log-level LEVEL        debug, info, warn or error (default info)
  --log-format FORMAT      text or json (default text)

Examples:
  acmehook check
  acmehook check --solve www
  acmehook run
  acmehook --config /etc/acmehook/acmehook.toml run --log-format json
  acmehook issue www
  acmehook list
  acmehook explain www
  acmehook revoke www --reason keyCompromise
  acmehook daemon
  acmehook script test scripts/nginx.lua renew --cert www
  acmehook account show

Exit status: 0 all good, 1 a certificate, deploy or CA operation failed, 2 usage or configuration error.
`

// globals are the flags every command accepts.
type globals struct {
	config    string
	logLevel  string
	logFormat string
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.config, "config", g.config, "configuration `file`")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "log `level`: debug, info, warn, error")
	fs.StringVar(&g.logFormat, "log-format", g.logFormat, "log `format`: text or json")
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// cli carries what every command needs.
type cli struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// run is the whole program: it parses args, runs the command and returns
// the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{g: globals{config: defaultConf, logLevel: "info", logFormat: "text"}, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("acmehook", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "acmehook: %v\n\n%s", err, usage)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, cmdArgs := rest[0], rest[1:]
	commands := map[string]func(context.Context, []string) error{
		"run":     c.cmdRun,
		"issue":   c.cmdIssue,
		"list":    c.cmdList,
		"check":   c.cmdCheck,
		"plugins": c.cmdPlugins,
		"account": c.cmdAccount,
		"script":  c.cmdScript,
		"version": c.cmdVersion,
		"explain": c.cmdExplain,
		"revoke":  c.cmdRevoke,
		"daemon":  c.cmdDaemon,
	}
	if cmd == "help" || cmd == "-h" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "acmehook: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	err := f(ctx, cmdArgs)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(usageError)), errors.Is(err, config.ErrInvalid):
		fmt.Fprintf(stderr, "acmehook %s: %v\n", cmd, err)
		return exitUsage
	case errors.Is(err, errReported):
		return exitFailed
	default:
		fmt.Fprintf(stderr, "acmehook %s: %v\n", cmd, err)
		return exitFailed
	}
}

// errReported means the command has already told the user what failed.
var errReported = errors.New("failures reported")

// flags returns a FlagSet for a command, with the global flags, that prints
// its usage (synopsis and examples) to stderr.
func (c *cli) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("acmehook "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	c.g.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; a parse error is a usage error.
func (c *cli) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return c.setupLog()
}

// parseInterspersed is parse for a command whose flags may come before,
// between or after its positional arguments, which it returns.
func (c *cli) parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
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

// loadConfig loads --config and makes the configuration file's directory
// the working directory, where plugins are started and scripts run, so
// that relative paths in plugin configuration and in scripts mean the same
// wherever acmehook is started from (every path of the configuration
// itself is already absolute).
func (c *cli) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(c.g.config)
	if err != nil {
		if errors.Is(err, config.ErrInvalid) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if err := os.Chdir(cfg.Dir()); err != nil {
		return nil, fmt.Errorf("entering the configuration's directory: %w", err)
	}
	return cfg, nil
}

// open loads the configuration, opens the store and makes an engine; the
// returned function closes both.
func (c *cli) open() (*config.Config, *engine.Engine, func(), error) {
	cfg, _, eng, closeAll, err := c.openWith(store.Open)
	if errors.Is(err, store.ErrLocked) {
		err = fmt.Errorf("%w; if acmehook daemon holds it, stop the daemon, run this command, and start it again (list and explain work beside it)", err)
	}
	return cfg, eng, closeAll, err
}

// openReadOnly is open without taking the storage lock, for commands that
// only read and so work beside a running daemon, which holds it.
func (c *cli) openReadOnly() (*config.Config, *store.Store, *engine.Engine, func(), error) {
	return c.openWith(store.OpenReadOnly)
}

func (c *cli) openWith(openStore func(string, store.Options) (*store.Store, error)) (*config.Config, *store.Store, *engine.Engine, func(), error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st, err := openStore(cfg.Storage, store.Options{Logger: c.log})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("opening storage: %w", err)
	}
	eng, err := engine.New(engine.Options{Config: cfg, Store: st, Logger: c.log})
	if err != nil {
		st.Close()
		return nil, nil, nil, nil, err
	}
	return cfg, st, eng, func() {
		if err := eng.Close(); err != nil {
			c.log.Warn("stopping plugins", "error", err)
		}
		st.Close()
	}, nil
}

func (c *cli) cmdVersion(_ context.Context, args []string) error {
	fs := c.flags("version", "acmehook version")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintln(c.stdout, "acmehook", engine.BuildVersion())
	return nil
}

// noArgs rejects positional arguments.
func noArgs(fs *flag.FlagSet, cmd string) error {
	if fs.NArg() != 0 {
		return usagef("%s takes no arguments (got %s)", cmd, strings.Join(fs.Args(), " "))
	}
	return nil
}
