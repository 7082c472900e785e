package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// TestE2EErrorsSayItOnce runs the binary into failures and checks what the
// operator reads: the error says what went wrong and where, each step of
// it once (no "X: X" repetition of a step), and appears once on each
// stream (issue 13 "each error appears once"); a plugin that never came
// up draws no "failed to exit gracefully".
func TestE2EErrorsSayItOnce(t *testing.T) {
	port, err := pebbletest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const www = "\n[[certificate]]\nname = \"www\"\ndomains = [\"www.errors.example.com\"]\nsolver = \"webroot\"\n"
	tests := []struct {
		name string
		// setup writes the site's configuration and returns the command's
		// arguments.
		setup func(t *testing.T, s *site) []string
		code  int
		// want is in the output, once on each stream where it appears.
		want []string
	}{
		{
			name: "unreachable CA",
			setup: func(t *testing.T, s *site) []string {
				s.write(www)
				s.rewrite(pebble.DirectoryURL, fmt.Sprintf("https://127.0.0.1:%d/dir", port))
				return []string{"run"}
			},
			code: 1,
			want: []string{fmt.Sprintf("fetching directory: GET https://127.0.0.1:%d/dir: dial tcp 127.0.0.1:%d: connect: connection refused", port, port)},
		},
		{
			name: "revoke a certificate never issued",
			setup: func(t *testing.T, s *site) []string {
				s.write(www)
				return []string{"revoke", "www", "--yes"}
			},
			code: 1,
			want: []string{"www has no certificate to revoke (none was issued yet): store: not found"},
		},
		{
			name: "plugin path not executable",
			setup: func(t *testing.T, s *site) []string {
				plain := filepath.Join(s.work.Dir, "plain-plugin")
				if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				s.write(www + "\n[plugins.py]\npath = \"plain-plugin\"\n")
				s.rewrite(`solver = "webroot"`, `solver = "py"`)
				return []string{"run"}
			},
			code: 2,
			want: []string{"plugins.py.path: ", "plain-plugin is not an executable file"},
		},
		{
			name: "plugin exits before its handshake",
			setup: func(t *testing.T, s *site) []string {
				quits := filepath.Join(s.work.Dir, "quits")
				if err := os.WriteFile(quits, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				s.write(www + "\n[plugins.py]\npath = \"quits\"\n")
				s.rewrite(`solver = "webroot"`, `solver = "py"`)
				return []string{"run"}
			},
			code: 1,
			want: []string{"plugin py: starting ", "quits: host: no plugin handshake: the process exited (exit status 3) first"},
		},
		{
			name: "refused account key rollover",
			setup: func(t *testing.T, s *site) []string {
				p := pebbletest.NewFaultProxy(t, pebble)
				p.Add(pebbletest.Fault{Kind: "POST /rollover-account-key", Status: 403, Detail: "keyChange not implemented"})
				s.write(www)
				s.rewrite(pebble.DirectoryURL, p.DirectoryURL)
				s.rewrite(strconv.Quote(pebble.CAFile), strconv.Quote(p.CAFile))
				return []string{"account", "rollover"}
			},
			code: 1,
			want: []string{"changing account key", "unauthorized (403): keyChange not implemented"},
		},
		{
			name: "order stuck processing",
			setup: func(t *testing.T, s *site) []string {
				p := pebbletest.NewFaultProxy(t, pebble)
				p.Add(pebbletest.Fault{Kind: "POST /finalize-order/", Rewrite: pebbletest.SetStatus("processing")})
				p.Add(pebbletest.Fault{Kind: "POST /my-order/", Rewrite: pebbletest.SetStatus("processing")})
				s.write(www)
				s.rewrite(pebble.DirectoryURL+"\"", p.DirectoryURL+"\"\norder_timeout = \"2s\"")
				s.rewrite(strconv.Quote(pebble.CAFile), strconv.Quote(p.CAFile))
				return []string{"run"}
			},
			code: 1,
			want: []string{"finalizing order: acme: order " + "https://", " still processing after "},
		},
		{
			name: "plugin cannot listen",
			setup: func(t *testing.T, s *site) []string {
				taken, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { taken.Close() })
				s.write(www + fmt.Sprintf("\n[plugins.sa]\npath = %q\n[plugins.sa.config]\nhttp_listen = [%q]\ntls_listen = []\n", bins["standalone"], taken.Addr().String()))
				s.rewrite(`solver = "webroot"`, `solver = "sa"`)
				return []string{"run"}
			},
			code: 1,
			want: []string{"plugin sa: configure: starting http-01 server: listen tcp " + "127.0.0.1:", "address already in use"},
		},
		{
			name: "self-check at a resolver that does not answer",
			setup: func(t *testing.T, s *site) []string {
				s.write(www)
				s.rewrite(strconv.Quote(pebble.DNSAddr)+"]", strconv.Quote("127.0.0.1:"+strconv.Itoa(port))+"]\ntimeout = \"1s\"")
				return []string{"check", "--solve", "www"}
			},
			code: 1,
			want: []string{fmt.Sprintf("on 127.0.0.1:%d", port)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			o := s.acmehook(tt.setup(t, s)...)
			t.Logf("%s", o)
			if o.code != tt.code {
				t.Errorf("exit %d, want %d\n%s", o.code, tt.code, o)
			}
			for _, want := range tt.want {
				if !strings.Contains(o.stdout+o.stderr, want) {
					t.Errorf("output does not say %q\n%s", want, o)
				}
				for stream, text := range map[string]string{"stdout": o.stdout, "stderr": o.stderr} {
					if n := strings.Count(text, want); n > 1 {
						t.Errorf("%s says %q %d times, want once\n%s", stream, want, n, o)
					}
				}
			}
			for _, line := range strings.Split(o.stdout+o.stderr, "\n") {
				if step := repeatedStep(line); step != "" {
					t.Errorf("%q repeats the step %q", line, step)
				}
			}
			if strings.Contains(o.stderr, "failed to exit gracefully") {
				t.Errorf("a plugin that never came up was killed for not exiting:\n%s", o)
			}
		})
	}
}

// repeatedStep returns a step that line says twice: the first two words of
// a ": "-separated part that begins another part too ("loading certificate
// www: loading certificate www: …", "fetching directory URL: fetching
// directory: …"), or "".
func repeatedStep(line string) string {
	seen := map[string]bool{}
	for _, part := range strings.Split(line, ": ") {
		words := strings.Fields(strings.Trim(part, `"`))
		if len(words) < 2 {
			continue
		}
		step := words[0] + " " + words[1]
		if seen[step] {
			return step
		}
		seen[step] = true
	}
	return ""
}

// TestRepeatedStep: the check finds the repetitions issue 13 lists and
// passes their repaired forms.
func TestRepeatedStep(t *testing.T) {
	for line, want := range map[string]string{
		"acmehook revoke: loading certificate www: loading certificate www: store: not found":                    "loading certificate",
		"fetching directory https://ca/dir: fetching directory: GET https://ca/dir: dial tcp: refused":           "fetching directory",
		"finalizing order : finalizing order https://ca/order/1: acme: badCSR":                                   "finalizing order",
		"plugin sahttp: configure: starting http-01 server: starting http-01 server: listen tcp: address in use": "starting http-01",
		"changing account key: acme: changing account key: unauthorized (403): no":                               "changing account",
		"fetching directory: GET https://ca/dir: dial tcp 127.0.0.1:1: connect: connection refused":              "",
		"www has no certificate to revoke (none was issued yet): store: not found":                               "",
	} {
		if got := repeatedStep(line); got != want {
			t.Errorf("repeatedStep(%q) = %q, want %q", line, got, want)
		}
	}
}

// rewrite replaces old, which must be there, with new in acmehook.toml.
func (s *site) rewrite(old, new string) {
	s.t.Helper()
	if !strings.Contains(s.text, old) {
		s.t.Fatalf("%q not in the configuration", old)
	}
	s.text = strings.ReplaceAll(s.text, old, new)
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		s.t.Fatal(err)
	}
}
