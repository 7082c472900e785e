// Package scalefixture lays out the configuration and the storage of many
// certificates without a CA, in seconds, for the benchmarks of what reads
// them all: loading the configuration, `acmehook list`, a metrics scrape.
//
// One certificate is stored through the certificate layer (store.Store's
// Commit, so the layout is the real one); every other certificate is a copy
// of its directory (a Commit syncs each file, which would make 10,000
// certificates take minutes): the same directories and current link, its
// own version.json (its names), and hard links to the first one's other
// files (key, certificate, chain, metadata: the same bytes; creating a file
// costs about 15 times what linking one does here). The certificate is
// self-signed for *.Zone, so it covers every certificate's name.
package scalefixture

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/acmehook/acmehook/engine/store"
)

// Zone is the DNS zone of every certificate's name.
const Zone = "scale.example.com"

// Name is the name of certificate i in the configuration and the storage.
func Name(i int) string { return fmt.Sprintf("s%05d", i) }

// Domain is the one name certificate i is for.
func Domain(i int) string { return Name(i) + "." + Zone }

// Certificates returns n [[certificate]] entries, each with the solver
// solver, as a configuration file holds them.
func Certificates(n int, solver string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[certificate]]\nname = %q\ndomains = [%q]\nsolver = %q\n", Name(i), Domain(i), solver)
	}
	return b.String()
}

// Populate stores a current version of each of the n certificates in the
// storage directory dir (created if missing; it must hold no certificate
// yet): an EC P-256 key and a certificate valid from notBefore to
// notAfter, with state as each version's metadata (the engine's meta.json;
// nil for none).
func Populate(dir string, n int, notBefore, notAfter time.Time, state []byte) error {
	if n < 1 {
		return errors.New("scalefixture: no certificates")
	}
	v, err := selfSigned(notBefore, notAfter)
	if err != nil {
		return err
	}
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		return err
	}
	first := Name(0)
	v.Info.Names = []string{Domain(0)}
	err = st.Commit(context.Background(), first, v, state)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("scalefixture: %w", err)
	}
	tmpl, err := readTree(filepath.Join(dir, "certificates", first))
	if err != nil {
		return err
	}
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for w := range len(errs) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1 + w; i < n && errs[w] == nil; i += len(errs) {
				info := v.Info
				info.Names = []string{Domain(i)}
				errs[w] = tmpl.copyTo(filepath.Join(dir, "certificates", Name(i)), info)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// selfSigned returns a version with a new key and a certificate for *.Zone
// signed by that key.
func selfSigned(notBefore, notAfter time.Time) (*store.Version, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "*." + Zone},
		DNSNames:     []string{"*." + Zone},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &store.Version{
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		CertPEM:  certPEM,
		ChainPEM: certPEM, // its own issuer
		Info: store.VersionInfo{
			Serial:           hex.EncodeToString(serial.Bytes()),
			KeyType:          "ec256",
			ProfileRequested: "auto",
			Issuer:           tmpl.Subject.CommonName,
			NotBefore:        notBefore.UTC(),
			NotAfter:         notAfter.UTC(),
			IssuedAt:         notBefore.UTC(),
		},
	}, nil
}

// tree is one certificate's directory as Commit wrote it.
type tree struct {
	dirs  []string          // relative, parents first
	files []string          // relative paths of the regular files
	links map[string]string // relative path -> symbolic link's target
	root  string
}

func readTree(root string) (*tree, error) {
	t := &tree{links: map[string]string{}, root: root}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		switch {
		case d.IsDir():
			t.dirs = append(t.dirs, rel)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t.links[rel] = target
		default:
			t.files = append(t.files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scalefixture: reading the first certificate: %w", err)
	}
	return t, nil
}

// copyTo writes the tree at root, with info as every version.json.
func (t *tree) copyTo(root string, info store.VersionInfo) error {
	vjson, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	vjson = append(vjson, '\n')
	if err := os.Mkdir(root, 0o700); err != nil {
		return fmt.Errorf("scalefixture: %w", err)
	}
	for _, d := range t.dirs {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			return fmt.Errorf("scalefixture: %w", err)
		}
	}
	for _, rel := range t.files {
		var err error
		if filepath.Base(rel) == "version.json" {
			err = os.WriteFile(filepath.Join(root, rel), vjson, 0o600)
		} else {
			err = os.Link(filepath.Join(t.root, rel), filepath.Join(root, rel))
		}
		if err != nil {
			return fmt.Errorf("scalefixture: %w", err)
		}
	}
	for rel, target := range t.links {
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			return fmt.Errorf("scalefixture: %w", err)
		}
	}
	return nil
}
