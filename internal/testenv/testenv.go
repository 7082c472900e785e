// Package testenv is what the engine's and the CLI's integration tests
// share: acmehook's solver plugins built once, an in-process Pebble, a web
// server answering http-01 on Pebble's validation port, and the
// acmehook.toml tables that point at them. Start it from TestMain.
package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// Plugins are the main packages every Env builds: the three solver plugins
// and the program dnsexec runs to set TXT records in Pebble's DNS.
var Plugins = []string{
	"github.com/acmehook/acmehook/plugins/webroot",
	"github.com/acmehook/acmehook/plugins/standalone",
	"github.com/acmehook/acmehook/plugins/dnsexec",
	"github.com/acmehook/acmehook/internal/demo/challtestsrv-dns",
}

// Env is one test binary's environment.
type Env struct {
	Pebble *pebbletest.Server
	// Bins maps a built program's name (the last element of its package
	// path: webroot, standalone, dnsexec, challtestsrv-dns, ...) to its
	// executable.
	Bins map[string]string
	// WebRoot is served on 127.0.0.1:Pebble.HTTPPort.
	WebRoot string

	dir string
	web *http.Server
}

// Start builds Plugins and the extra main packages in one go build (they
// share the build cache and link in parallel), starts a Pebble, and serves
// WebRoot on Pebble's http-01 port through wrap (nil: as it is). Close
// stops everything.
func Start(wrap func(http.Handler) http.Handler, extra ...string) (_ *Env, err error) {
	dir, err := os.MkdirTemp("", "acmehook-testenv-")
	if err != nil {
		return nil, err
	}
	e := &Env{Bins: map[string]string{}, WebRoot: filepath.Join(dir, "www"), dir: dir}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	pkgs := append(append([]string{}, Plugins...), extra...)
	build := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %v: %w\n%s", pkgs, err, out)
	}
	for _, p := range pkgs {
		e.Bins[path.Base(p)] = filepath.Join(dir, path.Base(p))
	}
	if e.Pebble, err = pebbletest.New(pebbletest.Options{}); err != nil {
		return nil, err
	}
	if err := os.Mkdir(e.WebRoot, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.Pebble.HTTPPort)))
	if err != nil {
		return nil, err
	}
	var h http.Handler = http.FileServer(http.Dir(e.WebRoot))
	if wrap != nil {
		h = wrap(h)
	}
	e.web = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go e.web.Serve(ln)
	return e, nil
}

// Close stops the web server and Pebble and removes the built programs.
func (e *Env) Close() {
	if e.web != nil {
		e.web.Close()
	}
	if e.Pebble != nil {
		e.Pebble.Close()
	}
	os.RemoveAll(e.dir)
}

// PluginsConfig returns the acmehook.toml [plugins] tables for the built
// solvers: webroot (serving WebRoot), unserved (a webroot whose directory,
// unserved, nobody serves), standalone (tls-alpn-01 on Pebble's TLS port)
// and dnsexec (TXT records in Pebble's DNS).
func (e *Env) PluginsConfig(unserved string) string {
	p := e.Pebble
	return fmt.Sprintf(`
[plugins.webroot]
path = %q
[plugins.webroot.config]
root = %q

[plugins.unserved]
path = %q
[plugins.unserved.config]
root = %q

[plugins.standalone]
path = %q
[plugins.standalone.config]
tls_listen = ["127.0.0.1:%d"]
http_listen = []

[plugins.dnsexec]
path = %q
[plugins.dnsexec.config]
program = %q
resolvers = [%q]
propagation_interval = "50ms"
propagation_timeout = "10s"
env = { CHALLTESTSRV_URL = %q }
`, e.Bins["webroot"], e.WebRoot,
		e.Bins["webroot"], unserved,
		e.Bins["standalone"], p.TLSPort,
		e.Bins["dnsexec"], e.Bins["challtestsrv-dns"], p.DNSAddr, p.DNSManagementURL)
}
