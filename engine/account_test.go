package engine

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk/sdktest/pebbletest"
)

// TestStoredAccount: a stored account signs with its URL straight away
// (RFC 8555 §6.2): twenty runs, each issuing a new certificate on one
// storage, register once; a run with the account stored needs 9 requests
// for one name (directory, newNonce, newOrder, authorization, challenge,
// authorization poll, finalize, order poll, certificate: no renewalInfo);
// and an account the CA does not know (a reset CA) is registered again,
// once, and the run issues.
func TestStoredAccount(t *testing.T) {
	e := newEnv(t)
	var certs strings.Builder
	for i := range 20 {
		fmt.Fprintf(&certs, "[[certificate]]\nname = \"a%d\"\ndomains = [\"a%d.account.example.com\"]\nsolver = \"webroot\"\n", i, i)
	}
	cfg := e.write(certs.String())
	pebble.Counter().Reset()
	for i := range 20 {
		name := fmt.Sprintf("a%d", i)
		if i == 1 {
			pebble.Counter().Reset()
		}
		if r := e.run(cfg, RunOptions{Names: []string{name}})[name]; r.Action != ActionIssued || r.Err != nil {
			t.Fatalf("run %d = %s %v, want issued", i, r.Action, r.Err)
		}
		if i == 1 {
			if counts, total := pebble.Counter().Snapshot(); total != 9 {
				t.Errorf("requests for one name with the account stored = %d, want 9: %v", total, counts)
			}
		}
	}
	counts, _ := pebble.Counter().Snapshot()
	if n := counts["POST /sign-me-up"]; n != 0 {
		t.Errorf("newAccount requests in runs 2-20 = %d, want 0 (%v)", n, counts)
	}

	t.Run("unknown to the CA", func(t *testing.T) {
		st, err := store.Open(cfg.Storage, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := st.LoadAccount(context.Background(), cfg.CA.Directory)
		if err == nil {
			a.Info.URL += "-forgotten"
			err = st.SaveAccountInfo(context.Background(), cfg.CA.Directory, a.Info)
		}
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		e.logs = &bytes.Buffer{}
		pebble.Counter().Reset()
		if r := e.run(cfg, RunOptions{Names: []string{"a0"}, Force: true})["a0"]; r.Action != ActionRenewed || r.Err != nil {
			t.Fatalf("run with a forgotten account = %s %v, want renewed", r.Action, r.Err)
		}
		if counts, _ := pebble.Counter().Snapshot(); counts["POST /sign-me-up"] != 1 {
			t.Errorf("newAccount requests = %d, want 1 (%v)", counts["POST /sign-me-up"], counts)
		}
		if !strings.Contains(e.logs.String(), "the CA did not know the stored account; registered it again") {
			t.Errorf("no warning about the forgotten account:\n%s", e.logs)
		}
	})
}

// TestRequestCount: the protocol minimum through the engine, counted by a
// strict Pebble (RFC-strict checks, real dns-01 validation through
// dnsexec): one name with a new account is 10 requests (directory,
// newNonce, newAccount, newOrder, authorization, challenge, one
// authorization poll, finalize, one order poll, certificate), and 9 with
// the account stored; no renewalInfo request in either run.
func TestRequestCount(t *testing.T) {
	srv := pebbletest.Start(t, pebbletest.Options{Strict: true})
	e := newEnv(t)
	e.srv = srv
	cfg := e.write("[[certificate]]\nname = \"c1\"\ndomains = [\"c1.count.example.com\"]\nsolver = \"dnsexec\"\n" +
		"[[certificate]]\nname = \"c2\"\ndomains = [\"c2.count.example.com\"]\nsolver = \"dnsexec\"\n")
	base := map[string]int{
		"GET /dir": 1, "HEAD /nonce-plz": 1, "POST /order-plz": 1, "POST /authZ/": 2, "POST /chalZ/": 1,
		"POST /finalize-order/": 1, "POST /my-order/": 1, "POST /certZ/": 1,
	}
	for _, tt := range []struct {
		name       string
		newAccount int
		want       int
	}{
		{"c1", 1, 10},
		{"c2", 0, 9},
	} {
		want := maps.Clone(base)
		if tt.newAccount > 0 {
			want["POST /sign-me-up"] = tt.newAccount
		}
		srv.Counter().Reset()
		e.withEngine(cfg, Options{}, func(eng *Engine, _ *store.Store) {
			// Long enough for Pebble to validate and issue before the first
			// poll, so each is polled once.
			eng.client.PollInterval = 300 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := eng.Run(ctx, RunOptions{Names: []string{tt.name}})
			if err != nil || res.Results[0].Action != ActionIssued || res.Results[0].Err != nil {
				t.Fatalf("run %s = %+v %v, want issued", tt.name, res, err)
			}
		})
		if got, total := srv.Counter().Snapshot(); !maps.Equal(got, want) || total != tt.want {
			t.Errorf("%s: requests = %v (%d), want %v (%d)", tt.name, got, total, want, tt.want)
		}
	}
}
