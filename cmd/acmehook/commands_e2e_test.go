package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2ECommands drives plugins, run with --log-format json, list, issue
// and the account subcommands through the binary, in the order an operator
// would, and checks what each prints and leaves on disk.
func TestE2ECommands(t *testing.T) {
	s := newSite(t)
	s.write("[[certificate]]\nname = \"cmd\"\ndomains = [\"cmd.example.com\"]\nsolver = \"webroot\"\n")

	t.Run("plugins", func(t *testing.T) {
		o := s.acmehook("plugins")
		if o.code != 0 {
			t.Fatalf("exit = %d, want 0\n%s", o.code, o)
		}
		for plugin, want := range map[string][]string{
			"webroot":    {"http-01", "false"},
			"standalone": {"tls-alpn-01"},
			"dnsexec":    {"dns-01", "true"},
		} {
			l := resultLine(o, plugin)
			for _, w := range want {
				if !strings.Contains(l, w) {
					t.Errorf("plugins: row %q lacks %q\n%s", l, w, o.stdout)
				}
			}
		}
	})

	t.Run("run logs JSON", func(t *testing.T) {
		o := s.acmehook("run", "--log-format", "json", "--log-level", "debug")
		if o.code != 0 {
			t.Fatalf("exit = %d, want 0\n%s", o.code, o)
		}
		msgs := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(o.stderr), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("stderr line is not JSON: %q (%v)", l, err)
			}
			if rec["cert"] == "cmd" {
				msgs[rec["msg"].(string)] = true
			}
		}
		for _, want := range []string{"obtaining certificate", "waiting for validation", "waiting for issuance", "certificate stored"} {
			if !msgs[want] {
				t.Errorf("no JSON log record %q for cert=cmd; got %v", want, msgs)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		o := s.acmehook("list")
		if o.code != 0 {
			t.Fatalf("exit = %d, want 0\n%s", o.code, o)
		}
		if !strings.HasPrefix(o.stdout, "NAME ") || !strings.Contains(o.stdout, "NEXT RENEWAL") || !strings.Contains(o.stdout, "LAST RESULT") {
			t.Errorf("list header missing\n%s", o.stdout)
		}
		l := resultLine(o, "cmd")
		for _, want := range []string{"cmd.example.com", "Pebble Intermediate CA", "UTC", "issued ok"} {
			if !strings.Contains(l, want) {
				t.Errorf("list row %q lacks %q", l, want)
			}
		}
	})

	t.Run("list --json matches list", func(t *testing.T) {
		text := s.acmehook("list")
		o := s.acmehook("list", "--json")
		if o.code != 0 || text.code != 0 {
			t.Fatalf("exit = %d, %d, want 0\n%s", text.code, o.code, o)
		}
		var doc ListOutput
		dec := json.NewDecoder(strings.NewReader(o.stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil || dec.More() {
			t.Fatalf("list --json: not one ListOutput document (%v)\n%s", err, o.stdout)
		}
		if len(doc.Certificates) != 1 {
			t.Fatalf("list --json: %d certificates, want 1\n%s", len(doc.Certificates), o.stdout)
		}
		c := doc.Certificates[0]
		leaf, _ := s.stored("cmd", []string{"cmd.example.com"})
		cur := c.Current
		if c.Name != "cmd" || strings.Join(c.Domains, ",") != "cmd.example.com" || c.Error != "" || cur == nil ||
			cur.Serial != fmt.Sprintf("%x", leaf.SerialNumber) || !cur.NotAfter.Equal(leaf.NotAfter) || !cur.NotBefore.Equal(leaf.NotBefore) ||
			strings.Join(cur.Names, ",") != "cmd.example.com" || cur.KeyType != "ec256" || !strings.HasPrefix(cur.Issuer, "Pebble Intermediate CA") ||
			c.Next != "none" || c.Due || c.At == nil || c.NextCheck == nil ||
			c.LastEvent == nil || c.LastEvent.Event != "issued" || c.LastEvent.Result != "ok" || c.DeployPending {
			t.Fatalf("list --json: %+v (current %+v), want the stored certificate %x (not after %s), next none, last event issued ok", c, cur, leaf.SerialNumber, leaf.NotAfter)
		}
		// The table is the same document, rendered: every column of the
		// row comes from these fields.
		row := strings.Fields(resultLine(text, "cmd"))
		want := strings.Fields(fmt.Sprintf("cmd cmd.example.com %s %s %s %s %s %s", cur.Issuer, fmtTime(cur.NotAfter), fmtTime(*c.At),
			c.LastEvent.Event, c.LastEvent.Result, c.LastEvent.Time.Format("2006-01-02 15:04")))
		if strings.Join(row, " ") != strings.Join(want, " ") {
			t.Errorf("list row  %q\nfrom JSON %q", strings.Join(row, " "), strings.Join(want, " "))
		}

		e := s.acmehook("explain", "cmd", "--json")
		var ex ExplainOutput
		if err := json.Unmarshal([]byte(e.stdout), &ex); e.code != 0 || err != nil {
			t.Fatalf("explain --json: %v\n%s", err, e)
		}
		r := ex.Renewal
		if ex.Next != c.Next || ex.At == nil || !ex.At.Equal(*c.At) || ex.Reason != c.Reason ||
			r.Due || r.At == nil || !r.At.Equal(*c.At) || len(r.Facts) == 0 || r.Facts[0].Label != "certificate" {
			t.Errorf("explain --json = %+v, want list's next %q, at %s and reason %q, facts starting with the certificate", ex, c.Next, c.At, c.Reason)
		}
	})

	t.Run("plugins --json", func(t *testing.T) {
		o := s.acmehook("plugins", "--json")
		var doc PluginsOutput
		if err := json.Unmarshal([]byte(o.stdout), &doc); o.code != 0 || err != nil {
			t.Fatalf("plugins --json: %v\n%s", err, o)
		}
		got := map[string]string{}
		for _, p := range doc.Plugins {
			got[p.Name] = fmt.Sprintf("%s %v %v %t %q", p.Reports, p.ChallengeTypes, p.IdentifierTypes, p.WaitsForPropagation, p.Error)
		}
		for name, want := range map[string]string{
			"webroot": `webroot [http-01] [dns ip] false ""`,
			"dnsexec": `dnsexec [dns-01] [dns] true ""`,
		} {
			if got[name] != want {
				t.Errorf("plugins --json: %s = %s, want %s", name, got[name], want)
			}
		}
	})

	t.Run("issue", func(t *testing.T) {
		before, _ := s.stored("cmd", []string{"cmd.example.com"})
		pebble.Counter().Reset()
		o := s.acmehook("issue", "cmd")
		if o.code != 0 {
			t.Fatalf("exit = %d, want 0\n%s", o.code, o)
		}
		if l := resultLine(o, "cmd"); !strings.Contains(l, " renewed ") || !strings.Contains(l, "forced") {
			t.Errorf("issue: result line = %q, want renewed, forced", l)
		}
		if n := newOrders(); n != 1 {
			t.Errorf("newOrder requests = %d, want 1", n)
		}
		if after, _ := s.stored("cmd", []string{"cmd.example.com"}); after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Errorf("issue kept serial %x, want a new certificate", after.SerialNumber)
		}
	})

	acctDir := filepath.Join(s.work.Dir, "storage", "accounts")
	keyPath := func() string {
		m, _ := filepath.Glob(filepath.Join(acctDir, "*", "key.pem"))
		if len(m) != 1 {
			t.Fatalf("account keys stored: %v, want one", m)
		}
		return m[0]
	}
	steps := []struct {
		args   []string
		stdout string
	}{
		{[]string{"account", "show"}, "status:     valid"},
		{[]string{"account", "update"}, "contact mailto:ops@example.com"},
		{[]string{"account", "rollover"}, "new key in place"},
		{[]string{"account", "show"}, "status:     valid"},
		{[]string{"account", "deactivate", "--yes"}, ": deactivated"},
	}
	for _, st := range steps {
		t.Run(strings.Join(st.args, " "), func(t *testing.T) {
			before, _ := os.ReadFile(keyPath())
			o := s.acmehook(st.args...)
			if o.code != 0 || !strings.Contains(o.stdout, st.stdout) {
				t.Fatalf("want exit 0 and %q\n%s", st.stdout, o)
			}
			after, _ := os.ReadFile(keyPath())
			if changed := !bytes.Equal(before, after); changed != (st.args[1] == "rollover") {
				t.Errorf("account key changed = %v", changed)
			}
			if st.args[1] != "rollover" {
				return
			}
			old, _ := filepath.Glob(filepath.Join(filepath.Dir(keyPath()), "key-*.pem.old"))
			if len(old) != 1 {
				t.Fatalf("previous keys kept: %v, want one", old)
			}
			if kept, _ := os.ReadFile(old[0]); !bytes.Equal(kept, before) {
				t.Errorf("%s does not hold the previous key", old[0])
			}
			if m := mode(t, old[0]); m != 0o600 {
				t.Errorf("%s mode = %v, want 0600", old[0], m)
			}
		})
	}
}

// TestE2EPluginChecksum: a plugin whose binary does not match its sha256
// is not started, and only the certificate that needs it fails, before
// any request to the CA for it; a plugin with the right sha256 runs.
func TestE2EPluginChecksum(t *testing.T) {
	sum := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))
	}
	s := newSite(t)
	s.write("[[certificate]]\nname = \"checked\"\ndomains = [\"checked.sum.example.com\"]\nsolver = \"standalone\"\n" +
		"[[certificate]]\nname = \"tampered\"\ndomains = [\"tampered.sum.example.com\"]\nsolver = \"webroot\"\n")
	s.text = strings.Replace(s.text, "[plugins.webroot]\n", fmt.Sprintf("[plugins.webroot]\nsha256 = %q\n", sum(bins["dnsexec"])), 1)
	s.text = strings.Replace(s.text, "[plugins.standalone]\n", fmt.Sprintf("[plugins.standalone]\nsha256 = %q\n", sum(bins["standalone"])), 1)
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		t.Fatal(err)
	}
	pebble.Counter().Reset()
	o := s.acmehook("run")
	if o.code != 1 {
		t.Fatalf("exit = %d, want 1\n%s", o.code, o)
	}
	if l := resultLine(o, "tampered"); !strings.Contains(l, "failed") || !strings.Contains(l, "checksum mismatch") {
		t.Errorf("tampered: result line = %q, want failed with the checksum mismatch", l)
	}
	if l := resultLine(o, "checked"); !strings.Contains(l, " issued ") {
		t.Errorf("checked: result line = %q, want issued", l)
	}
	if n := newOrders(); n != 1 {
		t.Errorf("newOrder requests = %d, want 1 (none for the tampered plugin's certificate)", n)
	}
}
