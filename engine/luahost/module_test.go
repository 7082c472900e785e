package luahost

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/event"
)

// luaQuote returns s as a Lua long-bracket-free quoted string.
func luaQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	src := `
local acmehook = require("acmehook")
local f = acmehook.files
local dir = ` + luaQuote(dir) + `
assert(f.mkdir(dir .. "/tls/sub", {mode = "0750"}))
assert(f.mkdir(dir .. "/tls/sub"))
assert(f.mkdir(dir .. "/tls/sub2"))
assert(f.write(dir .. "/tls/a.pem", "hello\n", {mode = "0640"}))
assert(f.read(dir .. "/tls/a.pem") == "hello\n")
assert(f.write(dir .. "/tls/a.pem", "replaced\n"))
assert(f.copy(dir .. "/tls/a.pem", dir .. "/tls/b.pem"))
assert(f.copy(dir .. "/tls/a.pem", dir .. "/tls/c.pem", {mode = "0644"}))
assert(f.exists(dir .. "/tls/b.pem") == true)
assert(f.exists(dir .. "/tls/none") == false)
assert(f.write(dir .. "/tls/gone", "x"))
assert(f.remove(dir .. "/tls/gone"))
assert(f.remove(dir .. "/tls/gone"))
local v, err = f.read(dir .. "/tls/none")
assert(v == nil and err:find("no such file"), err)
v, err = f.copy(dir .. "/tls/none", dir .. "/tls/d.pem")
assert(v == nil and err:find("no such file"), err)
v, err = f.write(dir .. "/missing-dir/x", "x")
assert(v == nil and err:find("no such file"), err)
`
	if err := run(t, New(Options{}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path    string
		mode    os.FileMode
		content string
	}{
		{"tls/sub", os.ModeDir | 0o750, ""}, // an existing directory keeps its mode
		{"tls/sub2", os.ModeDir | 0o755, ""},
		{"tls/a.pem", 0o600, "replaced\n"}, // write defaults to 0600
		{"tls/b.pem", 0o600, "replaced\n"}, // copy keeps the source's mode
		{"tls/c.pem", 0o644, "replaced\n"},
	}
	for _, tt := range tests {
		fi, err := os.Stat(filepath.Join(dir, tt.path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tt.mode {
			t.Errorf("mode of %s = %v, want %v", tt.path, fi.Mode(), tt.mode)
		}
		if !fi.IsDir() {
			b, _ := os.ReadFile(filepath.Join(dir, tt.path))
			if string(b) != tt.content {
				t.Errorf("content of %s = %q, want %q", tt.path, b, tt.content)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "tls"))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") || e.Name() == "gone" || e.Name() == "d.pem" {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestFilesOwner(t *testing.T) {
	dir := t.TempDir()
	src := `
local acmehook = require("acmehook")
local ok, err = acmehook.files.write(` + luaQuote(dir+"/owned") + `, "x", {owner = 65534, group = 65534})
if os_is_root then assert(ok, err) else assert(not ok and err:find("requires root"), err) end
`
	if os.Geteuid() == 0 {
		src = "os_is_root = true\n" + src
	}
	if err := run(t, New(Options{}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(filepath.Join(dir, "owned"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("owner of written file = %d:%d, want 65534:65534", st.Uid, st.Gid)
	}
}

func TestExec(t *testing.T) {
	h := New(Options{OutputLimit: 1000})
	tests := []struct {
		name, code string
	}{
		{"true", `local r = assert(acmehook.exec({"true"})); assert(r.code == 0 and r.stdout == "" and r.stderr == "")`},
		{"false", `local r = assert(acmehook.exec({"false"})); assert(r.code == 1, r.code)`},
		{"cat stdin", `local r = assert(acmehook.exec({"cat"}, {stdin = "pem data"})); assert(r.stdout == "pem data", r.stdout)`},
		{"argv not shell", `local r = assert(acmehook.exec({"echo", "$HOME;", "a b"})); assert(r.stdout == "$HOME; a b\n", r.stdout)`},
		{"env and stderr", `local r = assert(acmehook.exec({"/bin/sh", "-c", "echo $GREETING >&2; exit 3"}, {env = {GREETING = "hi"}})); assert(r.code == 3 and r.stderr == "hi\n", r.stderr)`},
		{"dir", `local r = assert(acmehook.exec({"pwd"}, {dir = "/"})); assert(r.stdout == "/\n", r.stdout)`},
		{"output capped", `local r = assert(acmehook.exec({"/bin/sh", "-c", "yes | head -c 5000"})); assert(#r.stdout == 1000 and r.stdout_truncated and not r.stderr_truncated, #r.stdout)`},
		{"timeout", `local r, err = acmehook.exec({"sleep", "10"}, {timeout = 0.2}); assert(r == nil and err:find("stopped after 200ms"), err)`},
		{"timeout kills children", `local r, err = acmehook.exec({"/bin/sh", "-c", "sleep 10; echo"}, {timeout = "200ms"}); assert(r == nil and err:find("stopped"), err)`},
		{"missing program", `local r, err = acmehook.exec({"/nonexistent/nginx", "-t"}); assert(r == nil and err:find("no such file"), err)`},
		{"empty argv raises", `local ok, err = pcall(acmehook.exec, {}); assert(not ok and err:find("non%-empty"), err)`},
		{"non-string argv raises", `local ok, err = pcall(acmehook.exec, {"echo", 1}); assert(not ok and err:find("argv%[2%]"), err)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			if err := run(t, h, "local acmehook = require('acmehook')\n"+tt.code, event.Event{Type: event.Issued}); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestDeadlineStopsGoFunctions: a blocking call ends at the run's deadline.
func TestDeadlineStopsGoFunctions(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer slow.Close()
	// A TCP server that accepts and never answers the TLS handshake.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	h := New(Options{Timeout: 300 * time.Millisecond})
	tests := []struct{ name, code string }{
		{"tls.probe", `local r, err = acmehook.tls.probe("` + silent.Addr().String() + `", "www.example", {timeout = 10}); error(err)`},
		{"exec", `local r, err = acmehook.exec({"sleep", "10"}); error(err)`},
		{"sleep", `local r, err = acmehook.sleep(10); error(err)`},
		{"http", `local r, err = acmehook.http.request({url = "` + slow.URL + `"}); error(err)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := run(t, h, "local acmehook = require('acmehook')\n"+tt.code, event.Event{Type: event.Issued})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Dispatch = %v, want deadline exceeded", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v, want about 300ms", d)
			}
		})
	}
}

func TestHTTPRequest(t *testing.T) {
	var got struct {
		method, ctype, auth string
		body                []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.ctype, got.auth = r.Method, r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		got.body, _ = io.ReadAll(r.Body)
		w.Header().Set("X-Request-Id", "42")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	src := `
local acmehook = require("acmehook")
local r = assert(acmehook.http.request({
  url = "` + srv.URL + `/hook", method = "put",
  headers = {["Content-Type"] = "application/json", Authorization = "Bearer t"},
  body = acmehook.json.encode({serial = "ab"}), timeout = "5s",
}))
assert(r.status == 202, r.status)
assert(r.headers["x-request-id"] == "42")
assert(acmehook.json.decode(r.body).ok == true)
local r2, err = acmehook.http.request({url = "http://127.0.0.1:1/"})
assert(r2 == nil and err:find("refused"), err)
local ok, err2 = pcall(acmehook.http.request, {url = "file:///etc/passwd"})
assert(not ok and err2:find("http://"), err2)
`
	if err := run(t, New(Options{}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
	if got.method != "PUT" || got.ctype != "application/json" || got.auth != "Bearer t" || string(got.body) != `{"serial":"ab"}` {
		t.Errorf("server saw %s %q %q %s, want PUT application/json, Bearer t, {\"serial\":\"ab\"}", got.method, got.ctype, got.auth, got.body)
	}
}

func TestJSON(t *testing.T) {
	src := `
local acmehook = require("acmehook")
local j = acmehook.json
assert(j.encode({1, 2, "x"}) == '[1,2,"x"]')
assert(j.encode({a = {b = true}, n = 1.5}) == '{"a":{"b":true},"n":1.5}')
assert(j.encode("s") == '"s"' and j.encode(nil) == "null")
local v = assert(j.decode('{"list":[1,"two",false],"o":{"k":null}}'))
assert(v.list[1] == 1 and v.list[2] == "two" and v.list[3] == false and v.o.k == nil)
local bad, err = j.decode("{")
assert(bad == nil and err:find("decoding json"), err)
local cyc = {}; cyc.self = cyc
bad, err = j.encode(cyc)
assert(bad == nil and err:find("nested too deeply"), err)
bad, err = j.encode({f = print})
assert(bad == nil and err:find("function"), err)
`
	if err := run(t, New(Options{}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
}

func TestX509AndProbe(t *testing.T) {
	ev, err := event.Synthetic(event.Issued, "www", []string{"www.example", "example"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(ev.FullchainPath, ev.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	src := `
local acmehook = require("acmehook")
acmehook.on("issued", function(ev)
  local c = assert(acmehook.x509.parse(ev.fullchain_pem))
  assert(c.serial == ev.serial, c.serial)
  assert(c.not_after == ev.not_after and c.not_before == ev.not_before)
  assert(c.common_name == "www.example" and c.dns_names[1] == "www.example" and c.dns_names[2] == "example")
  assert(c.issuer == ev.issuer and not c.is_ca and #c.fingerprint_sha256 == 64)
  local ca = assert(acmehook.x509.parse(ev.chain_pem))
  assert(ca.is_ca)
  local bad, err = acmehook.x509.parse("not pem")
  assert(bad == nil and err:find("no CERTIFICATE"), err)

  local p = assert(acmehook.tls.probe("` + addr + `", "www.example"))
  assert(p.serial == ev.serial and p.not_after == ev.not_after)
  assert(p.verified == false and p.verify_error:find("unknown authority"), p.verify_error)
  p = assert(acmehook.tls.probe("` + addr + `", "example", {ca_file = ev.chain_path}))
  assert(p.verified == true and p.verify_error == nil, p.verify_error)
  p = assert(acmehook.tls.probe("` + addr + `", "other.example", {ca_file = ev.chain_path}))
  assert(p.verified == false and p.verify_error:find("other.example"), p.verify_error)
  local none, perr = acmehook.tls.probe("127.0.0.1:1", "www.example", {timeout = 2})
  assert(none == nil and perr:find("refused"), perr)
end)
`
	if err := run(t, New(Options{}), src, ev); err != nil {
		t.Fatal(err)
	}
}

func TestLog(t *testing.T) {
	var buf bytes.Buffer
	h := New(Options{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	src := `
local acmehook = require("acmehook")
acmehook.log.debug("hidden")
acmehook.log.warn("deployed", {serial = "ab", attempt = 2, ok = true, ratio = 0.5})
print("plain", 1)
`
	path := writeScript(t, "log.lua", src)
	if err := h.Dispatch(context.Background(), path, event.Event{Type: event.Renew}); err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2: %s", len(lines), buf.String())
	}
	want := map[string]any{"level": "WARN", "msg": "deployed", "script": path, "event": "renew", "serial": "ab", "attempt": 2.0, "ok": true, "ratio": 0.5}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("log field %s = %v, want %v", k, lines[0][k], v)
		}
	}
	if lines[1]["msg"] != "plain\t1" || lines[1]["level"] != "INFO" {
		t.Errorf("print logged %v, want INFO plain\\t1", lines[1])
	}
}

func TestEventTable(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  event.Type
		check string
	}{
		{event.Issued, `ev.name == "issued" and ev.cert_name == "www" and ev.domains[1] == "www.example" and #ev.domains == 2
			and acmehook.files.read(ev.cert_path) == ev.cert_pem and acmehook.files.read(ev.fullchain_path) == ev.fullchain_pem
			and acmehook.files.read(ev.chain_path) == ev.chain_pem and acmehook.files.exists(ev.key_path)
			and ev.not_after > os.time() and ev.test == true and ev.previous_serial == nil and ev.error == nil and ev.challenge == nil`},
		{event.Renew, `ev.previous_serial ~= nil and ev.previous_serial ~= ev.serial`},
		{event.Revoke, `ev.revocation_reason == 4`},
		{event.Failed, `ev.error.problem_type == "urn:ietf:params:acme:error:rateLimited" and ev.error.message:find("synthetic") and ev.error.problem_detail ~= nil
			and ev.cert_name == "www" and #ev.domains == 2 and ev.serial ~= nil and acmehook.files.exists(ev.cert_path) and ev.not_after > os.time()
			and ev.previous_serial == nil and ev.challenge == nil`},
		{event.ChallengeProvision, `ev.challenge.type == "dns-01" and ev.challenge.identifier == "www.example" and ev.challenge.dns_name == "_acme-challenge.www.example."
			and ev.challenge.key_authorization:sub(1, #ev.challenge.token) == ev.challenge.token and #ev.challenge.dns_value == 43
			and ev.cert_name == "www" and ev.serial == nil and ev.cert_pem == nil and ev.error == nil`},
		{event.ChallengeCleanup, `ev.challenge.token ~= nil and ev.serial == nil`},
		{event.UserActionRequired, `ev.error.problem_type == "urn:ietf:params:acme:error:userActionRequired" and ev.error.problem_instance:find("^https://")
			and ev.error.message:find("synthetic") and ev.cert_name == "www" and ev.serial ~= nil and ev.not_after > os.time()`},
		{event.RenewalHeld, `ev.held_until > ev.not_after and ev.expires_before_hold_ends == true and ev.hold_reason:find("guard")
			and ev.serial ~= nil and acmehook.files.exists(ev.cert_path) and ev.cert_name == "www" and ev.error == nil`},
		{event.TOSChanged, `ev.name == "tos-changed" and ev.cert_name == nil and ev.terms_of_service:find("v2") and ev.previous_terms_of_service:find("v1")
			and ev.agreed == false and ev.directory:find("^https://") and ev.account_url:find("^https://") and ev.serial == nil and ev.test == true`},
		{event.RunBegin, `ev.name == "run-begin" and ev.cert_name == nil and #ev.domains == 0 and ev.started_at <= os.time() and ev.test == true
			and #ev.certificates == 1 and ev.certificates[1].cert_name == "www" and ev.certificates[1].domains[2] == "example"
			and ev.certificates[1].action == "renew" and ev.certificates[1].reason ~= nil and ev.certificates[1].deployed == nil
			and ev.deployed == nil and ev.issued == nil and ev.serial == nil`},
		{event.RunEnd, `ev.name == "run-end" and ev.cert_name == nil and #ev.certificates == 1
			and ev.certificates[1].action == "renewed" and ev.certificates[1].deployed == true and #ev.certificates[1].serial > 0
			and ev.certificates[1].not_after > os.time() and ev.certificates[1].error == nil
			and #ev.renewed == 1 and ev.renewed[1] == "www" and #ev.deployed == 1 and ev.deployed[1] == "www"
			and #ev.issued == 0 and #ev.failed == 0 and #ev.held == 0`},
	}
	for _, tt := range tests {
		t.Run(string(tt.name), func(t *testing.T) {
			certEvent := tt.name == event.Issued || tt.name == event.Renew || tt.name == event.Revoke
			ev, err := event.Synthetic(tt.name, "www", []string{"www.example", "example"}, filepath.Join(dir, string(tt.name)))
			if certEvent && err == nil {
				t.Fatal("SyntheticEvent into a missing directory succeeded")
			}
			os.Mkdir(filepath.Join(dir, string(tt.name)), 0o700)
			if ev, err = event.Synthetic(tt.name, "www", []string{"www.example", "example"}, filepath.Join(dir, string(tt.name))); err != nil {
				t.Fatal(err)
			}
			if certEvent {
				if fi, err := os.Stat(ev.KeyPath); err != nil || fi.Mode() != 0o600 {
					t.Errorf("key file mode = %v (%v), want 0600", fi.Mode(), err)
				}
			}
			src := "local acmehook = require('acmehook')\nlocal seen = {}\n" +
				"for _, e in ipairs(acmehook.events) do acmehook.on(e, function(ev) seen[#seen + 1] = e; assert(" + tt.check + ") end) end\n" +
				"acmehook.on('" + string(tt.name) + "', function() assert(#seen == 1 and seen[1] == '" + string(tt.name) + "') end)\n"
			if err := run(t, New(Options{}), src, ev); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRequireLibDir(t *testing.T) {
	lib := t.TempDir()
	os.MkdirAll(filepath.Join(lib, "site"), 0o755)
	os.WriteFile(filepath.Join(lib, "site", "paths.lua"), []byte("loads = (loads or 0) + 1\nreturn {tls = '/etc/tls'}\n"), 0o644)
	src := `
local paths = require("site.paths")
assert(paths.tls == "/etc/tls")
assert(require("site.paths") == paths and loads == 1)
local ok, err = pcall(require, "site.missing")
assert(not ok and err:find("not found"), err)
`
	if err := run(t, New(Options{LibDir: lib}), src, event.Event{Type: event.Issued}); err != nil {
		t.Fatal(err)
	}
	if err := run(t, New(Options{}), `require("site.paths")`, event.Event{Type: event.Issued}); err == nil {
		t.Error("require from a library dir without Options.LibDir succeeded")
	}
}

func TestDispatchNoHandler(t *testing.T) {
	src := "local acmehook = require('acmehook')\nacmehook.on('issued', function() error('must not run') end)\n"
	if err := run(t, New(Options{}), src, event.Event{Type: event.Revoke}); err != nil {
		t.Errorf("Dispatch(revoke) to an issued-only script = %v, want nil", err)
	}
	if err := run(t, New(Options{}), src, event.Event{Type: "deployed"}); err == nil {
		t.Error("Dispatch of an unknown event succeeded")
	}
	err := New(Options{}).Dispatch(context.Background(), filepath.Join(t.TempDir(), "none.lua"), event.Event{Type: event.Issued})
	var se *ScriptError
	if !errors.As(err, &se) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dispatch(missing script) = %v, want *ScriptError wrapping ErrNotExist", err)
	}
}
