// Command demo runs acmehook's main job end to end on one machine with
// nothing but Go: it starts Pebble and pebble-challtestsrv (the pinned tool
// dependencies) on loopback, serves the webroot directory on Pebble's http-01
// port, runs "acmehook run" with the repository's acmehook.toml, shows what
// the deploy scripts wrote and "acmehook list", and stops what it started.
//
// It is run by "make demo" from the repository root, after "make build".
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The demo's fixed loopback addresses; acmehook.toml names the same ones.
const (
	pebbleAPI   = "127.0.0.1:14000"
	pebbleMgmt  = "127.0.0.1:15000"
	httpPort    = "5002" // where Pebble's VA connects for http-01: served from the webroot
	tlsPort     = "5001" // where Pebble's VA connects for tls-alpn-01: the standalone plugin
	dnsAddr     = "127.0.0.1:8053"
	dnsMgmtAddr = "127.0.0.1:8055"
	runDir      = "demo/run"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	if err := os.RemoveAll(runDir); err != nil {
		return err
	}
	for _, d := range []string{"bin", "webroot", "deployed"} {
		if err := os.MkdirAll(filepath.Join(runDir, d), 0o755); err != nil {
			return err
		}
	}
	step("building Pebble and pebble-challtestsrv (pinned in go.mod) and the demo's DNS program")
	for _, pkg := range []string{
		"github.com/letsencrypt/pebble/v2/cmd/pebble",
		"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv",
		"./internal/demo/challtestsrv-dns",
	} {
		tool := filepath.Base(pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(runDir, "bin", tool), pkg)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %w", tool, err)
		}
	}
	pebbleDir, err := output(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2")
	if err != nil {
		return err
	}
	minica, err := os.ReadFile(filepath.Join(pebbleDir, "test/certs/pebble.minica.pem"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(runDir, "pebble.minica.pem"), minica, 0o644); err != nil {
		return err
	}
	config := fmt.Sprintf(`{"pebble": {
  "listenAddress": %q, "managementListenAddress": %q,
  "certificate": %q, "privateKey": %q,
  "httpPort": %s, "tlsPort": %s, "keyAlgorithm": "ecdsa",
  "profiles": {"default": {"description": "90 days", "validityPeriod": 7776000},
               "shortlived": {"description": "6 days", "validityPeriod": 518400}}}}`,
		pebbleAPI, pebbleMgmt,
		filepath.Join(pebbleDir, "test/certs/localhost/cert.pem"), filepath.Join(pebbleDir, "test/certs/localhost/key.pem"),
		httpPort, tlsPort)
	configPath := filepath.Join(runDir, "pebble-config.json")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return err
	}

	step("starting pebble-challtestsrv (DNS on " + dnsAddr + ") and Pebble (ACME on https://" + pebbleAPI + "/dir)")
	dns, err := start(filepath.Join(runDir, "bin", "pebble-challtestsrv"), []string{
		"-dnsserver", dnsAddr, "-management", dnsMgmtAddr,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
	}, "challtestsrv.log")
	if err != nil {
		return err
	}
	defer dns.stop()
	pebble, err := start(filepath.Join(runDir, "bin", "pebble"), []string{"-config", configPath, "-dnsserver", dnsAddr}, "pebble.log",
		"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	if err != nil {
		return err
	}
	defer pebble.stop()
	for _, addr := range []string{pebbleAPI, pebbleMgmt, dnsMgmtAddr} {
		if err := waitListening(ctx, addr); err != nil {
			return err
		}
	}

	step("serving " + runDir + "/webroot on 127.0.0.1:" + httpPort + " (the web server the webroot plugin writes into)")
	web := &http.Server{Addr: "127.0.0.1:" + httpPort, Handler: http.FileServer(http.Dir(filepath.Join(runDir, "webroot"))), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", web.Addr)
	if err != nil {
		return fmt.Errorf("serving the webroot: %w", err)
	}
	go web.Serve(ln)
	defer web.Close()

	step("acmehook check --solve wildcard (present, self-check and clean up each challenge; no CA contact)")
	if err := acmehook(ctx, "--log-level", "warn", "check", "--solve", "wildcard"); err != nil {
		return fmt.Errorf("checking the wildcard certificate's solvers: %w", err)
	}

	begin := time.Now()
	step("acmehook run")
	runErr := acmehook(ctx, "run")
	elapsed := time.Since(begin)

	step("what the deploy scripts wrote (" + runDir + "/deployed)")
	entries, _ := os.ReadDir(filepath.Join(runDir, "deployed"))
	for _, e := range entries {
		path := filepath.Join(runDir, "deployed", e.Name())
		if filepath.Ext(e.Name()) != ".txt" {
			// Output copies (certificates, keys): name and mode only.
			if fi, err := os.Stat(path); err == nil {
				fmt.Printf("  %s (%s, %d bytes)\n", e.Name(), fi.Mode().Perm(), fi.Size())
			}
			continue
		}
		b, _ := os.ReadFile(path)
		fmt.Printf("  %s: %s\n", e.Name(), strings.TrimSpace(string(b)))
	}
	step("acmehook list")
	if err := acmehook(ctx, "list"); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return fmt.Errorf("acmehook failed (logs: %s/pebble.log): %w", runDir, runErr)
	}
	fmt.Printf("\ndemo: all certificates issued and deployed; acmehook run took %s\n", elapsed.Round(time.Millisecond))
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

// acmehookTimeout bounds each acmehook command, so that a hang shows as an
// error instead of a demo that never ends (a run takes about a second).
const acmehookTimeout = time.Minute

func acmehook(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, acmehookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bin/acmehook", append([]string{"--config", "acmehook.toml"}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("running %s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

type process struct {
	cmd *exec.Cmd
	log *os.File
}

func start(bin string, args []string, logName string, env ...string) (*process, error) {
	logFile, err := os.Create(filepath.Join(runDir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	return &process{cmd: cmd, log: logFile}, nil
}

func (p *process) stop() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.log.Close()
}

func waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after 20s (see %s/*.log): %w", addr, runDir, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
