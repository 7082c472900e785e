package sdk_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/plugin/host"
	solverv1 "github.com/acmehook/acmehook/plugin/internal/proto/acmehook/solver/v1"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// bin maps a test plugin's name to its executable, built once in TestMain.
var bin = map[string]string{}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sdk-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		pkgs := []string{"../internal/testplugins/faulty", "./example"}
		if out, err := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the test plugins: %v\n%s", err, out)
			return 1
		}
		for _, pkg := range pkgs {
			bin[filepath.Base(pkg)] = filepath.Join(dir, filepath.Base(pkg))
		}
		return m.Run()
	}()
	os.Exit(code)
}

// TestProtocolVersionMatchesProto pins sdk.ProtocolVersion to
// PROTOCOL_VERSION_CURRENT both in solver.proto's text and in the generated
// code, so that neither can change alone: a plugin written from the proto
// in another language keeps working.
func TestProtocolVersionMatchesProto(t *testing.T) {
	if got, want := sdk.ProtocolVersion, int(solverv1.ProtocolVersion_PROTOCOL_VERSION_CURRENT); got != want {
		t.Errorf("sdk.ProtocolVersion = %d, want PROTOCOL_VERSION_CURRENT %d from the generated code", got, want)
	}
	src, err := os.ReadFile("../internal/proto/acmehook/solver/v1/solver.proto")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*PROTOCOL_VERSION_CURRENT\s*=\s*(\d+)\s*;`).FindSubmatch(src)
	if m == nil {
		t.Fatal("solver.proto defines no PROTOCOL_VERSION_CURRENT")
	}
	if got, want := sdk.ProtocolVersion, string(m[1]); strconv.Itoa(got) != want {
		t.Errorf("sdk.ProtocolVersion = %d, want PROTOCOL_VERSION_CURRENT %s from solver.proto", got, want)
	}
	if !regexp.MustCompile(`(?m)^package acmehook\.solver\.v1;`).Match(src) {
		t.Error("solver.proto's package is no longer acmehook.solver.v1")
	}
}

// TestRunByHand: Serve returns an error saying what the program is, and
// the plugin's main exits with status 1.
func TestRunByHand(t *testing.T) {
	for _, name := range []string{"example", "faulty"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin[name])
			cmd.Env = []string{}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("running %s by hand: err = %v, want exit status 1", name, err)
			}
			if want := "the " + name + " solver is an acmehook solver plugin"; !strings.Contains(string(out), want) {
				t.Errorf("running %s by hand printed %q, want it to contain %q", name, out, want)
			}
		})
	}
}

func TestServeRefusesIncompleteDescription(t *testing.T) {
	t.Setenv("ACMEHOOK_PLUGIN", "solver")
	err := sdk.Serve(sdk.Plugin{Name: "x"})
	if err == nil || err.Error() != `sdk: Plugin "x" lacks ChallengeTypes, New` {
		t.Errorf("Serve(incomplete) = %v, want it to name ChallengeTypes and New", err)
	}
}

func TestConfigDecode(t *testing.T) {
	var cfg struct {
		Addr    string       `json:"addr"`
		Timeout sdk.Duration `json:"timeout"`
		Count   int          `json:"count"`
	}
	if err := (sdk.Config{Values: map[string]any{"addr": ":80", "timeout": "2m", "count": float64(3)}}).Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":80" || time.Duration(cfg.Timeout) != 2*time.Minute || cfg.Count != 3 {
		t.Errorf("Decode = %+v", cfg)
	}
	for _, bad := range []map[string]any{{"adr": ":80"}, {"timeout": "soon"}, {"timeout": 30}} {
		if err := (sdk.Config{Values: bad}).Decode(&cfg); err == nil {
			t.Errorf("Decode(%v) = nil, want error", bad)
		}
	}
}

func launch(t *testing.T, name string, opts host.LaunchOptions) (*host.Plugin, error) {
	t.Helper()
	opts.Name, opts.Path = name, bin[name]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := host.Launch(ctx, opts)
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, err
}

var ch = sdk.Challenge{
	Type:             "http-01",
	Identifier:       sdk.Identifier{Type: "dns", Value: "example.com"},
	Token:            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
	KeyAuthorization: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
}

// TestConfigureOnce: Info answers from the description before the
// configuration arrives; a challenge before it is refused by Serve (the
// solver has no "not configured" state); New runs once, and a second
// Configure is refused.
func TestConfigureOnce(t *testing.T) {
	ctx := context.Background()
	p, err := launch(t, "faulty", host.LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Info(ctx, &host.InfoRequest{})
	if err != nil || info.Name != "faulty" || !slices.Equal(info.ChallengeTypes, []string{"http-01"}) || !slices.Equal(info.IdentifierTypes, []string{"dns"}) {
		t.Fatalf("Info before Configure = %+v, %v", info, err)
	}
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: ch}); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("Present before Configure = %v, want not configured", err)
	}
	if _, err := p.Configure(ctx, &host.ConfigureRequest{Config: map[string]any{"mode": "ok"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Present(ctx, &sdk.PresentRequest{Challenge: ch}); err != nil {
		t.Errorf("Present = %v", err)
	}
	if _, err := p.Configure(ctx, &host.ConfigureRequest{Config: map[string]any{"mode": "ok"}}); err == nil || !strings.Contains(err.Error(), "already configured") {
		t.Errorf("second Configure = %v, want already configured", err)
	}
}

// TestNewFails: the constructor's error, or a description that does not
// match the solver, is the launch's one error, naming the plugin once.
func TestNewFails(t *testing.T) {
	tests := []struct {
		name string
		opts host.LaunchOptions
		want string
	}{
		{"constructor error", host.LaunchOptions{Config: map[string]any{"new_error": "endpoint is required"}},
			"plugin faulty: configure: endpoint is required"},
		{"unknown key", host.LaunchOptions{Config: map[string]any{"mood": "ok"}},
			`plugin faulty: configure: decoding configuration: json: unknown field "mood"`},
		{"claims to wait", host.LaunchOptions{Env: []string{"FAULTY_WAITS=true"}, Config: map[string]any{}},
			"plugin faulty: configure: sdk: Plugin.WaitsForPropagation is true but the solver does not implement Wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := launch(t, "faulty", tt.opts); err == nil || err.Error() != tt.want {
				t.Errorf("Launch = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestServeExitsWithParent: a plugin whose parent dies without stopping
// it (here a shell, which sets no parent-death signal) exits by itself
// within a second.
func TestServeExitsWithParent(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	sh := exec.Command("/bin/sh", "-c", `"$PLUGIN" & wait`)
	sh.Env = []string{"PLUGIN=" + bin["faulty"], "FAULTY_PIDFILE=" + pidFile, "ACMEHOOK_PLUGIN=solver", "PLUGIN_PROTOCOL_VERSIONS=1"}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(5 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if time.Now().After(deadline) {
			t.Fatal("the plugin did not start")
		}
	}
	time.Sleep(100 * time.Millisecond) // the plugin is serving
	sh.Process.Kill()
	sh.Wait()
	killed := time.Now()
	for alive(pid) {
		if time.Since(killed) > time.Second {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d still running %v after its parent was killed", pid, time.Since(killed))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting for a reaper counts as exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestOfferedCertificate: offered a server certificate on its
// ServerCertFD, Serve uses it and announces none in the handshake line
// (no key of its own to make); offered none, or an unusable one, it makes
// and announces its own, as go-plugin's AutoMTLS does.
func TestOfferedCertificate(t *testing.T) {
	cert, key := selfSignedPEM(t)
	tests := []struct {
		name      string
		offer     []byte // nil: no descriptor, no variable
		announces bool
	}{
		{"offered", append(cert, key...), false},
		{"not offered", nil, true},
		{"unusable", []byte("not PEM"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin["faulty"])
			cmd.Env = []string{"ACMEHOOK_PLUGIN=solver", "PLUGIN_PROTOCOL_VERSIONS=1", "PLUGIN_CLIENT_CERT=" + string(cert)}
			if tt.offer != nil {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				w.Write(tt.offer)
				w.Close()
				defer r.Close()
				cmd.ExtraFiles = []*os.File{r}
				cmd.Env = append(cmd.Env, "ACMEHOOK_PLUGIN_SERVER_CERT_FD=3")
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			fields := strings.Split(strings.TrimSpace(line), "|")
			if len(fields) < 6 || (fields[5] != "") != tt.announces {
				t.Errorf("handshake line %q: announces a certificate %v, want %v", line, len(fields) >= 6 && fields[5] != "", tt.announces)
			}
		})
	}
}

// selfSignedPEM returns a certificate for localhost that is its own CA,
// and its key, as PEM.
func selfSignedPEM(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
