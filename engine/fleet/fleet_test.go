package fleet

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/engine/store/sealed"
	"github.com/acmehook/acmehook/internal/testetcd"
)

// etcdStorage returns a [storage] of backend etcd on c below a prefix of
// the test's own, with an identity file written for it.
func etcdStorage(t *testing.T, c *testetcd.Cluster, node string) config.Storage {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "age.key")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Storage{
		Backend: config.BackendEtcd, Endpoints: c.Endpoints, Prefix: "/" + strings.ReplaceAll(t.Name(), "/", "_") + "/",
		LeaseTTL: config.Duration{Duration: 2 * time.Second}, Node: node,
		Recipients: []age.Recipient{id.Recipient()}, AgeIdentityFile: idFile,
	}
}

func keyPEM(t *testing.T) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// snapshot returns every file under dir with its content and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "lock" && filepath.Dir(p) == dir {
			return nil // the lock record, rewritten by every holder
		}
		fi, _ := os.Lstat(p)
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			v += string(b)
		} else if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			v += l
		}
		out[p] = v
		return nil
	})
	return out
}

// TestMigrate: a file storage with an account and two versions of a
// certificate is copied into etcd; the copy reads back through the
// certificate layer as the original, no private key is in etcd in plain
// text, and the files are untouched.
func TestMigrate(t *testing.T) {
	ctx := t.Context()
	c := testetcd.Start(t, testetcd.Options{})
	dir := filepath.Join(t.TempDir(), "storage")
	src, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const ca = "https://ca.example/directory"
	acctKey := keyPEM(t)
	if err := src.CreateAccountKey(ctx, ca, acctKey); err != nil {
		t.Fatal(err)
	}
	if err := src.SaveAccountInfo(ctx, ca, store.AccountInfo{URL: "https://ca.example/acct/1"}); err != nil {
		t.Fatal(err)
	}
	for i, serial := range []string{"01", "02"} {
		v := &store.Version{KeyPEM: keyPEM(t), CertPEM: []byte("-----BEGIN CERTIFICATE-----\n" + serial + "\n"), ChainPEM: []byte("chain"),
			Info: store.VersionInfo{Serial: serial, Names: []string{"www.example"}, IssuedAt: time.Unix(int64(1e9+i), 0)}}
		if err := src.Commit(ctx, "www", v, []byte(`{"state":`+serial+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	want, err := src.LoadCertificate(ctx, "www")
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	before := snapshot(t, dir)

	s := etcdStorage(t, c, "n1")
	s.Path = dir
	rep, err := MigrateStorage(ctx, s, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accounts != 1 || rep.Certificates != 1 || rep.Keys < 10 {
		t.Errorf("report = %+v, want 1 account, 1 certificate, every key", rep)
	}
	if diff := snapshotDiff(before, snapshot(t, dir)); diff != "" {
		t.Errorf("migrate changed the file storage: %s", diff)
	}

	dst, err := OpenStore(ctx, s, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	got, err := dst.LoadCertificate(ctx, "www")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || !bytes.Equal(got.KeyPEM, want.KeyPEM) || !bytes.Equal(got.CertPEM, want.CertPEM) || got.Info.Serial != "02" {
		t.Errorf("migrated current version = %s serial %s, want %s serial 02 with the same key", got.ID, got.Info.Serial, want.ID)
	}
	if st, err := dst.LoadState(ctx, "www"); err != nil || string(st) != `{"state":02}` {
		t.Errorf("migrated state = %q, %v", st, err)
	}
	if vs, err := dst.Versions(ctx, "www"); err != nil || len(vs) != 2 {
		t.Errorf("migrated versions = %v, %v; want 2", vs, err)
	}
	if a, err := dst.LoadAccount(ctx, ca); err != nil || !bytes.Equal(a.KeyPEM, acctKey) || a.Info.URL != "https://ca.example/acct/1" {
		t.Errorf("migrated account = %+v, %v", a, err)
	}
	resp, err := c.Client(t).Get(ctx, s.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd key %s holds a private key in plain text", kv.Key)
		}
	}
	dst.Close()

	// A second migrate refuses to copy over what is there.
	if _, err := MigrateStorage(ctx, s, StoreOptions{}); err == nil || !strings.Contains(err.Error(), "empty storage only") {
		t.Errorf("second migrate = %v, want a refusal", err)
	}
}

func snapshotDiff(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "+"+k)
		}
	}
	return strings.Join(d, ", ")
}

// TestOpenStore: one node holds the storage lock, a second is refused
// naming it; a node whose identity is unusable refuses to start.
func TestOpenStore(t *testing.T) {
	ctx := t.Context()
	c := testetcd.Start(t, testetcd.Options{})
	s := etcdStorage(t, c, "n1")
	st, err := OpenStore(ctx, s, StoreOptions{Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s2 := s
	s2.Node = "n2"
	if _, err := OpenStore(ctx, s2, StoreOptions{}); !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "node n1") {
		t.Errorf("second node's OpenStore = %v, want ErrLocked naming n1", err)
	}
	ro, err := OpenStore(ctx, s2, StoreOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only OpenStore beside the holder: %v", err)
	}
	defer ro.Close()
	nodes, err := Nodes(ctx, ro.Backend(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != "n1" || nodes[0].Version != "v1.2.3" || !nodes[0].Storage || time.Since(nodes[0].LastSeen) > 5*time.Second {
		t.Errorf("Nodes = %+v, want n1 v1.2.3 holding the storage lock, seen just now", nodes)
	}

	bad := []struct {
		name string
		mod  func(*config.Storage)
		want error
		text string
	}{
		{"missing identity", func(s *config.Storage) { s.AgeIdentityFile = filepath.Join(t.TempDir(), "none") }, fs.ErrNotExist, "storage.age_identity_file"},
		{"other fleet's identity", func(s *config.Storage) {
			id, _ := age.GenerateX25519Identity()
			p := filepath.Join(t.TempDir(), "other.key")
			os.WriteFile(p, []byte(id.String()), 0o600)
			s.AgeIdentityFile, s.Recipients = p, []age.Recipient{id.Recipient()}
		}, sealed.ErrIdentity, "sealed to other recipients"},
		{"identity readable by others", func(s *config.Storage) {
			p := filepath.Join(t.TempDir(), "open.key")
			b, _ := os.ReadFile(s.AgeIdentityFile)
			os.WriteFile(p, b, 0o644)
			os.Chmod(p, 0o644)
			s.AgeIdentityFile = p
		}, nil, "mode 0644"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			s3 := s
			s3.Node = "n3"
			tt.mod(&s3)
			_, err := OpenStore(ctx, s3, StoreOptions{ReadOnly: true})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("OpenStore = %v, want an error (%v) containing %q", err, tt.want, tt.text)
			}
		})
	}
}
