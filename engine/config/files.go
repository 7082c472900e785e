package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CheckFiles checks the files the configuration names: ca_bundle holds at
// least one PEM certificate, every plugin path is an executable regular
// file, every script a readable regular file, [lua] lib_dir a directory,
// and the directory of every output path exists. It is separate from Validate so that a file can be
// validated where those files do not exist (a build machine, the tests);
// the engine calls it before a run and `acmehook check` reports it. Like
// Validate, it returns every problem joined, in file order.
func (c *Config) CheckFiles() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, c.errorf(path, format, args...))
	}
	if p := c.CA.CABundle; p != "" {
		b, err := os.ReadFile(p)
		switch {
		case err != nil:
			add("ca.ca_bundle", "%v", unwrapPath(err, c.shown(p)))
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			add("ca.ca_bundle", "%s holds no PEM certificate", c.shown(p))
		}
	}
	if p := c.CA.TrustRoots; p != "" && p != TrustRootsSystem {
		b, err := os.ReadFile(p)
		switch {
		case err != nil:
			add("ca.trust_roots", "%v", unwrapPath(err, c.shown(p)))
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			add("ca.trust_roots", "%s holds no PEM certificate", c.shown(p))
		}
	}
	for _, name := range sortedKeys(c.Plugins) {
		p := c.Plugins[name]
		fi, err := os.Stat(p.Path)
		switch {
		case err != nil:
			add("plugins."+quoteSeg(name)+".path", "%v", unwrapPath(err, c.shown(p.Path)))
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			add("plugins."+quoteSeg(name)+".path", "%s is not an executable file", c.shown(p.Path))
		}
	}
	for i, cert := range c.Certificates {
		for j, s := range cert.Scripts {
			f, err := os.Open(s)
			if err == nil {
				var fi os.FileInfo
				fi, err = f.Stat()
				f.Close()
				if err == nil && !fi.Mode().IsRegular() {
					err = fmt.Errorf("%s is not a regular file", c.shown(s))
				}
			}
			if err != nil {
				add(fmt.Sprintf("certificate[%d].scripts[%d]", i, j), "%v", unwrapPath(err, c.shown(s)))
			}
		}
		for _, o := range []struct{ key, path string }{
			{"cert", cert.Output.Cert}, {"key", cert.Output.Key},
			{"chain", cert.Output.Chain}, {"fullchain", cert.Output.Fullchain},
		} {
			if o.path == "" {
				continue
			}
			if fi, err := os.Stat(filepath.Dir(o.path)); err != nil || !fi.IsDir() {
				add(fmt.Sprintf("certificate[%d].output.%s", i, o.key), "directory %s does not exist", c.shown(filepath.Dir(o.path)))
			}
		}
	}
	if err := c.checkLuaFiles(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.checkStorageFiles()...)
	sortByLine(errs)
	return errors.Join(errs...)
}

// unwrapPath replaces the absolute path in a *fs.PathError by shown.
func unwrapPath(err error, shown string) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", shown, pe.Err)
	}
	return err
}
