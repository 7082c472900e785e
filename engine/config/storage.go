package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"filippo.io/age"
)

// The storage backends.
const (
	BackendFile = "file"
	BackendEtcd = "etcd"
)

// Defaults and bounds of [storage] for the etcd backend.
const (
	DefaultEtcdPrefix = "/acmehook/"
	DefaultLeaseTTL   = 15 * time.Second
	// MinLeaseTTL is etcd's shortest lease with its default election
	// timeout (1 s: leases are at least 1.5 election timeouts, in whole
	// seconds); MaxLeaseTTL bounds how long a dead node keeps its
	// certificates.
	MinLeaseTTL = 2 * time.Second
	MaxLeaseTTL = 10 * time.Minute
	// DefaultRelayTimeout bounds how long the owner of a certificate waits
	// for every other node to present (or clean up) a challenge it relays;
	// MaxRelayTimeout keeps it below a CA's patience.
	DefaultRelayTimeout = 5 * time.Second
	MaxRelayTimeout     = 5 * time.Minute
)

// Storage is the [storage] table: where accounts and certificates are
// kept. The short form storage = "dir" is the file backend in dir.
type Storage struct {
	// Backend is "file" (default: a directory on this machine) or "etcd"
	// (a cluster shared by a fleet of nodes).
	Backend string `toml:"backend"`
	// Path is the file backend's directory (default acmehook-data beside
	// the config file).
	Path string `toml:"path"`

	// Endpoints are the etcd cluster's client URLs.
	Endpoints []string `toml:"endpoints"`
	// CAFile verifies the etcd servers' certificates; CertFile and KeyFile
	// are this node's client certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Username and Password log in to etcd; the password may come from
	// PasswordFile or the variable named by PasswordEnv instead.
	Username     string `toml:"username"`
	Password     Secret `toml:"password"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
	// Prefix is prepended to every etcd key (default "/acmehook/").
	Prefix string `toml:"prefix"`
	// LeaseTTL is how long this node's locks outlive it (default 15s).
	LeaseTTL Duration `toml:"lease_ttl"`
	// Node names this node in the fleet (default the hostname).
	Node string `toml:"node"`
	// RelayTimeout bounds the wait for the other nodes to present an
	// http-01 or tls-alpn-01 challenge this node relays (default 5s).
	RelayTimeout Duration `toml:"relay_timeout"`
	// AgeRecipients are the fleet's age public keys ("age1…"): private
	// keys are stored encrypted to all of them. AgeIdentityFile is this
	// node's age identity (mode 0600), which opens them. Both required
	// with the etcd backend. Recipients holds AgeRecipients parsed.
	AgeRecipients   []string        `toml:"age_recipients"`
	AgeIdentityFile string          `toml:"age_identity_file"`
	Recipients      []age.Recipient `toml:"-"`
}

// Where says where the storage is — the file backend's directory, or the
// etcd endpoints, prefix and node — so a reload can tell that it moved.
func (s Storage) Where() string {
	if s.Backend != BackendEtcd {
		return s.Path
	}
	return fmt.Sprintf("etcd %s%s (node %s)", strings.Join(s.Endpoints, ","), s.Prefix, s.Node)
}

// completeStorage fills in the defaults of [storage]; abs resolves paths.
func (c *Config) completeStorage(abs func(*string)) {
	s := &c.Store
	if s.Backend == "" {
		s.Backend = BackendFile
	}
	if s.Path == "" {
		s.Path = DefaultStorage
	}
	abs(&s.Path)
	c.Storage = s.Path
	if s.Backend != BackendEtcd {
		return
	}
	abs(&s.CAFile)
	abs(&s.CertFile)
	abs(&s.KeyFile)
	abs(&s.PasswordFile)
	abs(&s.AgeIdentityFile)
	if s.Prefix == "" {
		s.Prefix = DefaultEtcdPrefix
	}
	if s.LeaseTTL.Duration == 0 {
		s.LeaseTTL.Duration = DefaultLeaseTTL
	}
	if s.RelayTimeout.Duration == 0 {
		s.RelayTimeout.Duration = DefaultRelayTimeout
	}
	if s.Node == "" {
		if h, err := os.Hostname(); err == nil {
			s.Node, _, _ = strings.Cut(h, ".")
		}
	}
}

// resolveStoragePassword reads the etcd password given by file or
// environment variable.
func (c *Config) resolveStoragePassword() []error {
	s := &c.Store
	n := 0
	for _, set := range []bool{!s.Password.IsZero(), s.PasswordFile != "", s.PasswordEnv != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return []error{c.errorf("storage.password", "set only one of password, password_file and password_env")}
	case n == 0 || !s.Password.IsZero():
		return nil
	}
	v, err := readSecret(s.PasswordFile, c.shown(s.PasswordFile), s.PasswordEnv)
	if err != nil {
		key := "storage.password_file"
		if s.PasswordEnv != "" {
			key = "storage.password_env"
		}
		return []error{c.errorf(key, "%v", err)}
	}
	s.Password = NewSecret(v)
	return nil
}

// validateStorage checks [storage] and parses the age recipients.
func (c *Config) validateStorage() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, c.errorf(path, format, args...))
	}
	s := &c.Store
	if s.Path == "" {
		add("storage", "must not be empty")
	}
	switch s.Backend {
	case BackendFile:
		for key, set := range map[string]bool{
			"endpoints": len(s.Endpoints) > 0, "ca_file": s.CAFile != "", "cert_file": s.CertFile != "", "key_file": s.KeyFile != "",
			"username": s.Username != "", "password": !s.Password.IsZero(), "password_file": s.PasswordFile != "", "password_env": s.PasswordEnv != "",
			"prefix": s.Prefix != "", "lease_ttl": s.LeaseTTL.Duration != 0, "node": s.Node != "",
			"relay_timeout":  s.RelayTimeout.Duration != 0,
			"age_recipients": len(s.AgeRecipients) > 0, "age_identity_file": s.AgeIdentityFile != "",
		} {
			if set {
				add("storage."+key, "applies only with backend = %q", BackendEtcd)
			}
		}
		sortByLine(errs)
		return errs
	case BackendEtcd:
	default:
		add("storage.backend", "unknown backend %q; use %q or %q", s.Backend, BackendFile, BackendEtcd)
		return errs
	}
	if len(s.Endpoints) == 0 {
		add("storage.endpoints", "missing: list the etcd cluster's client URLs, e.g. [\"https://10.0.0.1:2379\"]")
	}
	for i, e := range s.Endpoints {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" && u.Path != "/" {
			add(fmt.Sprintf("storage.endpoints[%d]", i), "%q is not an etcd client URL (http:// or https://host:port)", e)
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		add("storage.cert_file", "cert_file and key_file go together")
	}
	hasPassword := !s.Password.IsZero() || s.PasswordFile != "" || s.PasswordEnv != ""
	if s.Username == "" && hasPassword {
		add("storage.password", "a password needs username")
	}
	if s.PasswordEnv != "" && !envRE.MatchString(s.PasswordEnv) {
		add("storage.password_env", "%q is not an environment variable name", s.PasswordEnv)
	}
	if !strings.HasPrefix(s.Prefix, "/") || !strings.HasSuffix(s.Prefix, "/") || strings.Contains(s.Prefix, "//") {
		add("storage.prefix", "%q must start and end with / (e.g. \"/acmehook/\")", s.Prefix)
	}
	if d := s.LeaseTTL.Duration; d < MinLeaseTTL || d > MaxLeaseTTL {
		add("storage.lease_ttl", "must be between %s and %s, got %s", MinLeaseTTL, MaxLeaseTTL, d)
	}
	if d := s.RelayTimeout.Duration; d <= 0 || d > MaxRelayTimeout {
		add("storage.relay_timeout", "must be more than 0s and at most %s, got %s", MaxRelayTimeout, d)
	}
	if !ValidName(s.Node) {
		add("storage.node", "%q is not a node name (letters, digits, '.', '_', '-'; set node when the hostname is not one)", s.Node)
	}
	if len(s.AgeRecipients) == 0 {
		add("storage.age_recipients", "missing: private keys in etcd are encrypted to the fleet's age recipients (age-keygen -y IDENTITY prints one)")
	}
	s.Recipients = nil
	for i, r := range s.AgeRecipients {
		rs, err := age.ParseRecipients(strings.NewReader(r))
		if err != nil || len(rs) != 1 {
			add(fmt.Sprintf("storage.age_recipients[%d]", i), "%q is not an age recipient (age1…)", r)
			continue
		}
		s.Recipients = append(s.Recipients, rs[0])
	}
	if s.AgeIdentityFile == "" {
		add("storage.age_identity_file", "missing: this node's age identity file (age-keygen -o FILE; mode 0600)")
	}
	return errs
}

// checkStorageFiles checks that the files [storage] names exist, and that
// the age identity file is not accessible to group or others.
func (c *Config) checkStorageFiles() []error {
	s := c.Store
	if s.Backend != BackendEtcd {
		return nil
	}
	var errs []error
	for key, p := range map[string]string{"ca_file": s.CAFile, "cert_file": s.CertFile, "key_file": s.KeyFile} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, c.errorf("storage."+key, "%v", unwrapPath(err, c.shown(p))))
		}
	}
	if p := s.AgeIdentityFile; p != "" {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			errs = append(errs, c.errorf("storage.age_identity_file", "%v", unwrapPath(err, c.shown(p))))
		case fi.Mode().Perm()&0o077 != 0:
			errs = append(errs, c.errorf("storage.age_identity_file", "%s has mode %04o: it must not be accessible to group or others (chmod 600)", c.shown(p), fi.Mode().Perm()))
		}
	}
	sortByLine(errs)
	return errs
}
