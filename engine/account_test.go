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
// the account stored; no renewalInfo request in either run. A run of 8
// certificates at concurrency 4 sends the 7 requests of each and at most
// one newNonce per certificate worked on at once: the nonce pool grows to
// the certificates in progress (acme.Client.Streams), no further.
func TestRequestCount(t *testing.T) {
	srv := pebbletest.Start(t, pebbletest.Options{Strict: true})
	e := newEnv(t)
	e.srv = srv
	var certs strings.Builder
	var many []string
	for _, name := range []string{"c1", "c2", "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"} {
		fmt.Fprintf(&certs, "[[certificate]]\nname = %q\ndomains = [\"%s.count.example.com\"]\nsolver = \"dnsexec\"\n", name, name)
		if name[0] == 'm' {
			many = append(many, name)
		}
	}
	cfg := e.write(certs.String())
	for _, tt := range []struct {
		names      []string
		newAccount int
		maxNonces  int // HEAD newNonce: at most the concurrency (4)
	}{
		{[]string{"c1"}, 1, 1},
		{[]string{"c2"}, 0, 1},
		{many, 0, 4},
	} {
		n := len(tt.names)
		want := map[string]int{
			"GET /dir": 1, "POST /order-plz": n, "POST /authZ/": 2 * n, "POST /chalZ/": n,
			"POST /finalize-order/": n, "POST /my-order/": n, "POST /certZ/": n,
		}
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
			res, err := eng.Run(ctx, RunOptions{Names: tt.names})
			if err != nil || len(res.Results) != n {
				t.Fatalf("run %v = %+v %v, want %d issued", tt.names, res, err, n)
			}
			for _, r := range res.Results {
				if r.Action != ActionIssued || r.Err != nil {
					t.Fatalf("run %v: %s = %s %v, want issued", tt.names, r.Name, r.Action, r.Err)
				}
			}
		})
		got, total := srv.Counter().Snapshot()
		heads := got["HEAD /nonce-plz"]
		delete(got, "HEAD /nonce-plz")
		wantTotal := 7*n + 1 + tt.newAccount + heads
		if !maps.Equal(got, want) || heads < 1 || heads > tt.maxNonces || total != wantTotal {
			t.Errorf("%v: requests = %v and %d newNonce (%d), want %v and 1 to %d newNonce (%d)", tt.names, got, heads, total, want, tt.maxNonces, wantTotal)
		}
	}
}
