package sealed_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/etcd"
	"github.com/acmehook/acmehook/engine/store/sealed"
	"github.com/acmehook/acmehook/internal/testetcd"
)

func keyPEM(t *testing.T) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func identity(t *testing.T) *age.X25519Identity {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func openEtcd(t *testing.T, c *testetcd.Cluster, node string) *etcd.Backend {
	b, err := etcd.Open(t.Context(), etcd.Config{Endpoints: c.Endpoints, Node: node, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestKeysAtRest: private keys written through the wrapper are readable
// through it, and nowhere in etcd in plain text; certificates stay plain.
func TestKeysAtRest(t *testing.T) {
	ctx := t.Context()
	c := testetcd.Start(t, testetcd.Options{})
	id := identity(t)
	s, err := sealed.Open(ctx, openEtcd(t, c, "a"), []age.Recipient{id.Recipient()}, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	acct, certKey := keyPEM(t), keyPEM(t)
	if err := s.Put(ctx, "accounts/x/key.pem", acct); err != nil {
		t.Fatal(err)
	}
	ops := []store.Op{
		store.Create("certificates/www/versions/v1/key.pem", certKey),
		store.Put("certificates/www/versions/v1/cert.pem", []byte("-----BEGIN CERTIFICATE-----\n")),
		store.Put("certificates/www/current", []byte("versions/v1")),
	}
	if err := s.Apply(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]byte{"accounts/x/key.pem": acct, "certificates/www/versions/v1/key.pem": certKey} {
		got, err := s.Get(ctx, k)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Get(%s) = %q, %v; want the key written", k, got, err)
		}
	}

	// Everything under the prefix, read with the etcd client directly.
	resp, err := c.Client(t).Get(ctx, etcd.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	sealedSeen := 0
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd key %s holds a private key in plain text", kv.Key)
		}
		if bytes.Contains(kv.Value, []byte("BEGIN AGE ENCRYPTED FILE")) {
			sealedSeen++
		}
		if strings.HasSuffix(string(kv.Key), "cert.pem") && !bytes.HasPrefix(kv.Value, []byte("-----BEGIN CERTIFICATE")) {
			t.Errorf("certificate %s is not stored readable: %q", kv.Key, kv.Value)
		}
	}
	if want := 3; sealedSeen != want { // two keys and the check value
		t.Errorf("%d sealed values in etcd, want %d", sealedSeen, want)
	}
}

func TestRefusesUnsealed(t *testing.T) {
	ctx := t.Context()
	c := testetcd.Start(t, testetcd.Options{})
	raw := openEtcd(t, c, "a")
	if err := raw.Put(ctx, "accounts/x/key.pem", keyPEM(t)); err != nil {
		t.Fatal(err)
	}
	id := identity(t)
	s, err := sealed.Open(ctx, raw, []age.Recipient{id.Recipient()}, []age.Identity{id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "accounts/x/key.pem"); !errors.Is(err, sealed.ErrNotSealed) {
		t.Errorf("Get of a key stored in plain text = %v, want ErrNotSealed", err)
	}
}

// TestIdentityRefused: a node whose identity is not among the recipients,
// or whose key pair is not the fleet's, refuses to open the storage.
func TestIdentityRefused(t *testing.T) {
	ctx := t.Context()
	c := testetcd.Start(t, testetcd.Options{})
	fleet, other := identity(t), identity(t)
	if _, err := sealed.Open(ctx, openEtcd(t, c, "a"), []age.Recipient{fleet.Recipient()}, []age.Identity{fleet}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		recipients []age.Recipient
		identities []age.Identity
	}{
		{"identity not a recipient", []age.Recipient{fleet.Recipient()}, []age.Identity{other}},
		{"a key pair of its own", []age.Recipient{other.Recipient()}, []age.Identity{other}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sealed.Open(ctx, openEtcd(t, c, "b"), tt.recipients, tt.identities)
			if !errors.Is(err, sealed.ErrIdentity) {
				t.Errorf("Open = %v, want ErrIdentity", err)
			}
		})
	}
}

func TestLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	id := identity(t)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good := write("good.txt", "# created: now\n"+id.String()+"\n", 0o600)
	ids, err := sealed.LoadIdentity(good)
	if err != nil || len(ids) != 1 {
		t.Fatalf("LoadIdentity(0600 file) = %v, %v", ids, err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"group readable", write("open.txt", id.String()+"\n", 0o640), "mode 0640"},
		{"missing", filepath.Join(dir, "none.txt"), "no such file"},
		{"not an identity", write("junk.txt", "hello\n", 0o600), "parsing the age identity file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sealed.LoadIdentity(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadIdentity = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := sealed.ParseRecipients([]string{id.Recipient().String()}); err != nil {
		t.Errorf("ParseRecipients: %v", err)
	}
	if _, err := sealed.ParseRecipients([]string{"age1bogus"}); err == nil {
		t.Error("ParseRecipients(age1bogus) succeeded")
	}
}
