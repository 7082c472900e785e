package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/internal/testetcd"
)

// TestE2EMigrateToEtcd: a certificate issued on the file storage is copied
// into etcd with `storage migrate --to etcd`; acmehook on etcd then serves
// it without ordering again, list shows it, no private key is readable in
// etcd, the files are left, and nodes lists no live node once the
// commands have exited.
func TestE2EMigrateToEtcd(t *testing.T) {
	s := newSite(t)
	certs := "[[certificate]]\nname = \"mig\"\ndomains = [\"mig.example.com\"]\nsolver = \"webroot\"\n"
	s.write(certs)
	if o := s.acmehook("run"); o.code != 0 {
		t.Fatalf("run on the file storage: %s", o)
	}
	before := s.acmehook("list")

	c := testetcd.Start(t, testetcd.Options{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(s.work.Dir, "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	storage := fmt.Sprintf(`[storage]
backend = "etcd"
path = "storage"
endpoints = [%q]
node = "n1"
lease_ttl = "5s"
age_recipients = [%q]
age_identity_file = "age.key"

`, c.Endpoints[0], id.Recipient().String())
	s.text = storage + strings.Replace(baseConfig(s.work.Unserved), `storage = "storage"`, "", 1) + certs
	if err := os.WriteFile(s.config, []byte(s.text), 0o644); err != nil {
		t.Fatal(err)
	}

	o := s.acmehook("storage", "migrate", "--to", "etcd")
	if o.code != 0 || !strings.Contains(o.stdout, "copied and verified") || !strings.Contains(o.stdout, "1 certificates") {
		t.Fatalf("storage migrate: %s", o)
	}
	if _, err := os.Stat(filepath.Join(s.work.Dir, "storage", "certificates", "mig", "current")); err != nil {
		t.Errorf("the file storage lost its certificate: %v", err)
	}

	o = s.acmehook("run")
	if o.code != 0 || strings.Contains(o.stderr, "obtaining certificate") {
		t.Errorf("run on etcd after the migration ordered again or failed: %s", o)
	}
	after := s.acmehook("list")
	if after.code != 0 || after.stdout != before.stdout {
		t.Errorf("list on etcd =\n%s\nwant what it showed on the file storage:\n%s", after, before.stdout)
	}

	resp, err := c.Client(t).Get(t.Context(), "/acmehook/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 10 {
		t.Errorf("etcd holds %d keys after the migration", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd key %s holds a private key in plain text", kv.Key)
		}
	}

	o = s.acmehook("nodes")
	if o.code != 0 || strings.TrimSpace(o.stdout) != "NODE  VERSION  PID  LAST SEEN  CERTIFICATES" {
		t.Errorf("nodes with no daemon running: %s", o)
	}
	if o := s.acmehook("storage", "migrate", "--to", "etcd"); o.code != 1 || !strings.Contains(o.stderr, "empty storage only") {
		t.Errorf("a second migrate: %s", o)
	}
}
