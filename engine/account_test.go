package engine

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/acmehook/acmehook/engine/store"
)

// TestStoredAccount: a stored account signs with its URL straight away
// (RFC 8555 §6.2): twenty runs, each issuing a new certificate on one
// storage, register once; a run with the account stored needs 9 requests
// for one name besides renewal information (directory, newNonce,
// newOrder, authorization, challenge, authorization poll, finalize, order
// poll, certificate); and an account the CA does not know (a reset CA) is
// registered again, once, and the run issues.
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
			counts, total := pebble.Counter().Snapshot()
			if n := total - counts["GET /draft-ietf-acme-ari-03/"]; n != 9 {
				t.Errorf("requests for one name with the account stored = %d, want 9: %v", n, counts)
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
