package luahost

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// The shipped scripts in ../../scripts, run against real files, real
// programs, a local HTTP endpoint and a local TLS server.

const scriptsDir = "../../scripts"

func synthetic(t *testing.T, name event.Type) event.Event {
	t.Helper()
	ev, err := event.Synthetic(name, "www", []string{"www.example", "example"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// fakeProgram writes an executable shell script standing in for nginx or
// systemctl: it appends its arguments to log and runs body.
func fakeProgram(t *testing.T, log, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake")
	src := "#!/bin/sh\necho \"$*\" >> '" + log + "'\n" + body + "\n"
	if err := os.WriteFile(p, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsServer serves, on every handshake, the certificate currently in
// dir/www.crt and dir/www.key (dir/NAME.crt and .key when the SNI's first
// label is NAME and those exist), as nginx does after a reload; if frozen
// is set it keeps serving that pair instead. It sends the last SNI it saw
// (buffered, latest wins) on sni.
func tlsServer(t *testing.T, dir string, frozen *tls.Certificate, sni chan string) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		select {
		case <-sni:
		default:
		}
		sni <- hello.ServerName
		if frozen != nil {
			return frozen, nil
		}
		name, _, _ := strings.Cut(hello.ServerName, ".")
		if _, err := os.Stat(filepath.Join(dir, name+".crt")); err != nil {
			name = "www"
		}
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		return &c, err
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNginxScript runs scripts/nginx.lua against real files, a fake nginx
// (a shell script logging its arguments) and a local TLS server that
// serves whatever www.crt and www.key hold, as nginx after a reload. Each
// case fires its event and then the run's run-end, which lists the
// certificate as deployed when the first event succeeded on an issued or
// renew, as the engine does.
func TestNginxScript(t *testing.T) {
	old := synthetic(t, event.Issued)
	oldPair, err := tls.LoadX509KeyPair(old.FullchainPath, old.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	ownGroup := strconv.Itoa(os.Getegid())
	tests := []struct {
		name      string
		ev        event.Type
		domains   []string          // default www.example, example
		vars      map[string]string // added to the defaults
		live      bool              // Event.Test unset, as from the engine
		dryRun    bool              // Event.DryRun set
		nginxBody string
		frozen    bool   // the server keeps serving the old certificate
		wantErr   string // "" for success
		wantCalls string
		wantNew   bool        // the new files are in place
		keyMode   os.FileMode // when wantNew; default 0600
		wantSNI   string      // default www.example
	}{
		{name: "issued", ev: event.Issued, live: true, wantCalls: "-t\n-s reload\n", wantNew: true},
		{name: "renew", ev: event.Renew, live: true, wantCalls: "-t\n-s reload\n", wantNew: true},
		{name: "key readable by a group", ev: event.Renew, live: true, vars: map[string]string{"nginx_group": ownGroup},
			wantCalls: "-t\n-s reload\n", wantNew: true, keyMode: 0o640},
		{name: "wildcard first", ev: event.Renew, live: true, domains: []string{"*.www.example", "www.example"},
			wantCalls: "-t\n-s reload\n", wantNew: true, wantSNI: "www.example"},
		{name: "wildcard only", ev: event.Renew, live: true, domains: []string{"*.www.example"},
			wantCalls: "-t\n-s reload\n", wantNew: true, wantSNI: "acmehook-probe.www.example"},
		{name: "probe_servername", ev: event.Renew, live: true, vars: map[string]string{"probe_servername": "alias.example"},
			wantCalls: "-t\n-s reload\n", wantNew: true, wantSNI: "alias.example"},
		{name: "config test fails, files restored, no reload", ev: event.Renew, live: true,
			nginxBody: `if [ "$1" = -t ]; then echo "nginx: [emerg] cannot load certificate" >&2; exit 1; fi`,
			wantErr:   "the new certificate was rejected (previous files restored): nginx -t exited 1: nginx: [emerg] cannot load certificate", wantCalls: "-t\n"},
		{name: "reload fails", ev: event.Issued, live: true, nginxBody: `if [ "$1" = -s ]; then exit 2; fi`,
			wantErr: "nginx -s reload exited 2", wantCalls: "-t\n-s reload\n", wantNew: true},
		{name: "old certificate still served", ev: event.Issued, live: true, frozen: true,
			wantErr: "does not serve the new certificate after reload: www.example: it serves serial", wantCalls: "-t\n-s reload\n", wantNew: true},
		{name: "revoke ignored", ev: event.Revoke, live: true, wantCalls: ""},
		{name: "dry run checks only", ev: event.Renew, live: true, dryRun: true, wantCalls: "-t\n"},
		{name: "test event checks only", ev: event.Renew, wantCalls: "-t\n-t\n"},
		{name: "test event, config broken", ev: event.Renew, nginxBody: "exit 1", wantErr: "nginx -t exited 1", wantCalls: "-t\n"},
		{name: "test event with test_deploy", ev: event.Renew, vars: map[string]string{"test_deploy": "true"}, wantCalls: "-t\n-s reload\n", wantNew: true},
		{name: "test event, no directory", ev: event.Renew, vars: map[string]string{"nginx_tls_dir": "/nonexistent/tls"}, wantErr: "/nonexistent/tls does not exist", wantCalls: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tlsDir := filepath.Join(t.TempDir(), "nginx", "tls")
			os.MkdirAll(tlsDir, 0o755)
			os.WriteFile(filepath.Join(tlsDir, "www.crt"), []byte(old.FullchainPEM), 0o644)
			os.WriteFile(filepath.Join(tlsDir, "www.key"), []byte(readFile(t, old.KeyPath)), 0o600)
			var frozen *tls.Certificate
			if tt.frozen {
				frozen = &oldPair
			}
			sni := make(chan string, 1)
			addr := tlsServer(t, tlsDir, frozen, sni)
			log := filepath.Join(t.TempDir(), "calls")
			os.WriteFile(log, nil, 0o644)
			vars := map[string]string{
				"nginx":         fakeProgram(t, log, tt.nginxBody),
				"nginx_tls_dir": tlsDir,
				"probe_address": addr,
				"probe_tries":   "2",
			}
			for k, v := range tt.vars {
				vars[k] = v
			}
			h := New(Options{Vars: vars})
			domains := tt.domains
			if domains == nil {
				domains = []string{"www.example", "example"}
			}
			ev, err := event.Synthetic(tt.ev, "www", domains, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ev.Test, ev.DryRun = !tt.live, tt.dryRun

			script := filepath.Join(scriptsDir, "nginx.lua")
			err = h.Dispatch(context.Background(), script, ev)
			rc := event.RunCertificate{Cert: "www", Domains: domains, Action: "renewed", Serial: ev.Serial,
				Deployed: err == nil && (tt.ev == event.Issued || tt.ev == event.Renew)}
			end := event.NewRunEnd(time.Now(), []event.RunCertificate{rc})
			end.Test, end.DryRun = ev.Test, ev.DryRun
			if endErr := h.Dispatch(context.Background(), script, end); err == nil {
				err = endErr
			}
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Dispatch = %v, want nil", err)
			}
			if tt.wantErr != "" {
				var se *ScriptError
				if !errors.As(err, &se) || !strings.Contains(se.Message, tt.wantErr) || se.Line == 0 {
					t.Fatalf("Dispatch = %v, want *ScriptError with a line and %q", err, tt.wantErr)
				}
				t.Logf("error: %v", err)
			}
			if got := readFile(t, log); got != tt.wantCalls {
				t.Errorf("nginx called with %q, want %q", got, tt.wantCalls)
			}
			wantCrt, wantKey := old.FullchainPEM, readFile(t, old.KeyPath)
			if tt.wantNew {
				wantCrt, wantKey = ev.FullchainPEM, readFile(t, ev.KeyPath)
			}
			if got := readFile(t, filepath.Join(tlsDir, "www.crt")); got != wantCrt {
				t.Errorf("www.crt is not the expected certificate (new: %v)", tt.wantNew)
			}
			if got := readFile(t, filepath.Join(tlsDir, "www.key")); got != wantKey {
				t.Errorf("www.key is not the expected key (new: %v)", tt.wantNew)
			}
			if entries, _ := os.ReadDir(tlsDir); len(entries) != 2 {
				t.Errorf("%s holds %d files, want www.crt and www.key only", tlsDir, len(entries))
			}
			if tt.wantNew {
				keyMode := tt.keyMode
				if keyMode == 0 {
					keyMode = 0o600
				}
				for file, mode := range map[string]os.FileMode{"www.crt": 0o644, "www.key": keyMode} {
					if fi, _ := os.Stat(filepath.Join(tlsDir, file)); fi.Mode() != mode {
						t.Errorf("mode of %s = %v, want %v", file, fi.Mode(), mode)
					}
				}
			}
			if tt.wantSNI != "" {
				select {
				case got := <-sni:
					if got != tt.wantSNI {
						t.Errorf("probe sent SNI %q, want %q", got, tt.wantSNI)
					}
				default:
					t.Errorf("no probe reached the server")
				}
			}
		})
	}
}

// TestNginxScriptOneReload: two certificates deployed in one run make one
// reload at run-end, after which each is probed for its own serial; a
// certificate of the run that failed is not probed.
func TestNginxScriptOneReload(t *testing.T) {
	tlsDir := filepath.Join(t.TempDir(), "tls")
	os.MkdirAll(tlsDir, 0o755)
	addr := tlsServer(t, tlsDir, nil, make(chan string, 1))
	log := filepath.Join(t.TempDir(), "calls")
	h := New(Options{Vars: map[string]string{"nginx": fakeProgram(t, log, ""), "nginx_tls_dir": tlsDir, "probe_address": addr, "probe_tries": "2"}})
	script := filepath.Join(scriptsDir, "nginx.lua")
	var certs []event.RunCertificate
	for _, name := range []string{"www", "api"} {
		ev, err := event.Synthetic(event.Renew, name, []string{name + ".example"}, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ev.Test = false
		if err := h.Dispatch(context.Background(), script, ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		certs = append(certs, event.RunCertificate{Cert: name, Domains: ev.Domains, Action: "renewed", Serial: ev.Serial, Deployed: true})
	}
	certs = append(certs, event.RunCertificate{Cert: "down", Domains: []string{"down.example"}, Action: "failed", Error: "creating order: boom"})
	if got := readFile(t, log); got != "-t\n-t\n" {
		t.Errorf("before run-end nginx was called with %q, want two config tests and no reload", got)
	}
	if err := h.Dispatch(context.Background(), script, event.NewRunEnd(time.Now(), certs)); err != nil {
		t.Fatalf("run-end: %v", err)
	}
	if got := readFile(t, log); got != "-t\n-t\n-s reload\n" {
		t.Errorf("nginx called with %q, want one reload after the two config tests", got)
	}
}

// TestHAProxyScript fires each case's event and then the run's run-end,
// listing the certificate as deployed when the first event succeeded on an
// issued or renew, as the engine does.
func TestHAProxyScript(t *testing.T) {
	tests := []struct {
		name       string
		ev         event.Type
		test       bool // a synthetic event from acmehook script test
		testDeploy bool
		body       string
		wantErr    string
		deploy     bool
		dryRun     bool
	}{
		{name: "dry run", ev: event.Renew, dryRun: true},
		{"issued", event.Issued, false, false, "", "", true, false},
		{"renew", event.Renew, false, false, "", "", true, false},
		{"reload fails", event.Renew, false, false, "echo 'Job for haproxy.service failed' >&2; exit 1", "exited 1: Job for haproxy.service failed", true, false},
		{"failed ignored", event.Failed, false, false, "", "", false, false},
		{"test event checks only", event.Renew, true, false, "", "", false, false},
		{"test event, no directory", event.Renew, true, false, "", "does not exist", false, false},
		{"test event with test_deploy", event.Renew, true, true, "", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certDir := filepath.Join(t.TempDir(), "certs")
			log := filepath.Join(t.TempDir(), "calls")
			vars := map[string]string{
				"haproxy_cert_dir": certDir,
				"haproxy_reload":   fakeProgram(t, log, tt.body) + " reload haproxy",
			}
			if tt.testDeploy {
				vars["test_deploy"] = "true"
			}
			if (tt.test || tt.dryRun) && tt.wantErr == "" {
				os.Mkdir(certDir, 0o755)
			}
			h := New(Options{Vars: vars})
			ev := synthetic(t, tt.ev)
			ev.Test, ev.DryRun = tt.test, tt.dryRun
			script := filepath.Join(scriptsDir, "haproxy.lua")
			err := h.Dispatch(context.Background(), script, ev)
			end := event.NewRunEnd(time.Now(), []event.RunCertificate{{Cert: "www", Domains: ev.Domains, Action: "renewed", Serial: ev.Serial,
				Deployed: err == nil && (tt.ev == event.Issued || tt.ev == event.Renew)}})
			end.Test, end.DryRun = ev.Test, ev.DryRun
			if endErr := h.Dispatch(context.Background(), script, end); err == nil {
				err = endErr
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Dispatch = %v, want error %q", err, tt.wantErr)
			}
			pemPath := filepath.Join(certDir, "www.pem")
			if !tt.deploy {
				if _, err := os.Stat(pemPath); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("stat %s = %v, want not exist", pemPath, err)
				}
				if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("reload command run without a deploy")
				}
				if entries, _ := os.ReadDir(certDir); len(entries) != 0 {
					t.Errorf("%s holds %d files, want none", certDir, len(entries))
				}
				if _, err := os.Stat(certDir); tt.wantErr != "" && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a failed test event created %s", certDir)
				}
				return
			}
			if got := readFile(t, log); got != "reload haproxy\n" {
				t.Errorf("reload command called with %q, want %q", got, "reload haproxy\n")
			}
			fi, err := os.Stat(pemPath)
			if err != nil || fi.Mode() != 0o600 {
				t.Fatalf("stat %s = %v, %v, want mode 0600", pemPath, fi, err)
			}
			combined := readFile(t, pemPath)
			if want := ev.FullchainPEM + readFile(t, ev.KeyPath); combined != want {
				t.Errorf("combined PEM is not fullchain followed by key")
			}
			pair, err := tls.X509KeyPair([]byte(combined), []byte(combined))
			if err != nil || len(pair.Certificate) != 2 {
				t.Errorf("tls.X509KeyPair(combined) = %d certificates, %v; want 2, nil", len(pair.Certificate), err)
			}
		})
	}
}

// recorder is a local webhook endpoint remembering what it was sent.
type recorder struct {
	mu     sync.Mutex
	status int
	bodies []map[string]any
	auth   []string
}

func (rec *recorder) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &m) != nil {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.bodies = append(rec.bodies, m)
		rec.auth = append(rec.auth, r.Header.Get("Authorization"))
		if rec.status != 0 {
			w.WriteHeader(rec.status)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/hook"
}

func TestWebhookScript(t *testing.T) {
	tests := []struct {
		ev      event.Type
		status  int
		calls   int
		wantErr string
		check   func(ev event.Event, body map[string]any) string
	}{
		{ev: event.Issued, calls: 1, check: func(ev event.Event, b map[string]any) string {
			if b["event"] != "issued" || b["cert_name"] != "www" || b["serial"] != ev.Serial || b["issuer"] != ev.Issuer ||
				b["not_after"] != ev.NotAfter.UTC().Format("2006-01-02T15:04:05Z") || b["test"] != true {
				return "issued fields"
			}
			if d, _ := b["domains"].([]any); len(d) != 2 || d[0] != "www.example" {
				return "domains"
			}
			return ""
		}},
		{ev: event.Renew, calls: 1, check: func(ev event.Event, b map[string]any) string {
			if b["previous_serial"] != ev.PreviousSerial || b["event"] != "renew" {
				return "previous_serial"
			}
			return ""
		}},
		{ev: event.Revoke, calls: 1, check: func(ev event.Event, b map[string]any) string {
			if b["revocation_reason"] != 4.0 {
				return "revocation_reason"
			}
			return ""
		}},
		{ev: event.Issued, status: http.StatusServiceUnavailable, calls: 1, wantErr: "webhook answered 503"},
		{ev: event.Failed, calls: 0},
		{ev: event.ChallengeProvision, calls: 0},
	}
	for _, tt := range tests {
		t.Run(string(tt.ev), func(t *testing.T) {
			rec := &recorder{status: tt.status}
			h := New(Options{Vars: map[string]string{"webhook_url": rec.start(t), "webhook_token": "s3cret"}})
			ev := synthetic(t, tt.ev)
			err := h.Dispatch(context.Background(), filepath.Join(scriptsDir, "webhook.lua"), ev)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Dispatch = %v, want error %q", err, tt.wantErr)
			}
			if len(rec.bodies) != tt.calls {
				t.Fatalf("webhook received %d requests, want %d", len(rec.bodies), tt.calls)
			}
			if tt.calls > 0 && rec.auth[0] != "Bearer s3cret" {
				t.Errorf("Authorization = %q, want Bearer s3cret", rec.auth[0])
			}
			if tt.check != nil {
				if bad := tt.check(ev, rec.bodies[0]); bad != "" {
					t.Errorf("webhook body %v: wrong %s", rec.bodies[0], bad)
				}
			}
		})
	}
	err := New(Options{}).Dispatch(context.Background(), filepath.Join(scriptsDir, "webhook.lua"), synthetic(t, event.Issued))
	if err == nil || !strings.Contains(err.Error(), "set vars.webhook_url") {
		t.Errorf("Dispatch without webhook_url = %v, want a configuration error", err)
	}
}

func TestFailedAlertScript(t *testing.T) {
	want := map[event.Type][]string{
		event.Failed: {"[test] acmehook could not obtain www (www.example, example)", "too many certificates", "[rateLimited]",
			"the certificate in service (serial ", ") expires ", " days"},
		event.RenewalHeld: {"[test] acmehook holds the renewal of www (www.example, example) until ", "(synthetic: the reissue guard",
			"but the certificate in service (serial ", "`acmehook issue www`"},
	}
	for _, name := range event.Types {
		t.Run(string(name), func(t *testing.T) {
			rec := &recorder{}
			h := New(Options{Vars: map[string]string{"alert_url": rec.start(t)}})
			if err := h.Dispatch(context.Background(), filepath.Join(scriptsDir, "failed_alert.lua"), synthetic(t, name)); err != nil {
				t.Fatal(err)
			}
			if want[name] == nil {
				if len(rec.bodies) != 0 {
					t.Errorf("alert sent for %s", name)
				}
				return
			}
			if len(rec.bodies) != 1 {
				t.Fatalf("alerts sent = %d, want 1", len(rec.bodies))
			}
			text, _ := rec.bodies[0]["text"].(string)
			for _, w := range want[name] {
				if !strings.Contains(text, w) {
					t.Errorf("alert text %q does not contain %q", text, w)
				}
			}
		})
	}
	t.Run("failed with userActionRequired", func(t *testing.T) {
		rec := &recorder{}
		h := New(Options{Vars: map[string]string{"alert_url": rec.start(t)}})
		ev := synthetic(t, event.UserActionRequired)
		ev.Type = event.Failed
		if err := h.Dispatch(context.Background(), filepath.Join(scriptsDir, "failed_alert.lua"), ev); err != nil {
			t.Fatal(err)
		}
		if text, _ := rec.bodies[0]["text"].(string); !strings.Contains(text, "[userActionRequired]; the CA needs a person to act first: https://ca.example/acme/agreement/synthetic") {
			t.Errorf("alert text %q does not name the instance URL", text)
		}
	})
	t.Run("renewal-held ending in time", func(t *testing.T) {
		rec := &recorder{}
		h := New(Options{Vars: map[string]string{"alert_url": rec.start(t)}})
		ev := synthetic(t, event.RenewalHeld)
		ev.ExpiresBeforeHoldEnds = false
		if err := h.Dispatch(context.Background(), filepath.Join(scriptsDir, "failed_alert.lua"), ev); err != nil || len(rec.bodies) != 0 {
			t.Errorf("Dispatch = %v with %d alerts, want no alert for a hold that ends before expiry", err, len(rec.bodies))
		}
	})
}
