// Package config loads and checks acmehook.toml, the file that describes the
// CA account, the solver plugins and the certificates acmehook manages.
//
// Load decodes strictly (unknown keys and wrong types are errors with
// file:line), fills in defaults in one place, resolves relative paths
// against the file's directory, reads secrets from files or environment
// variables, and runs Validate. Every value is parsed into its real type
// there, once (durations, identifiers, the renewal policy), so `check` and
// `run` cannot disagree. Checks that need a plugin's capabilities run
// later, in CheckSolvers (the engine, per certificate) and
// CheckSolverCapabilities (`acmehook check`, every certificate).
//
// Of acmehook's own packages, config imports only the leaf packages acme
// (identifiers, challenge types) and engine/renewal (the renewal policy).
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/renewal"
)

// Directory URLs for the short names accepted in ca.directory.
const (
	LetsEncrypt        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Defaults applied by Load for keys the file leaves out.
const (
	DefaultStorage = "acmehook-data" // relative to the config file
	// DefaultConcurrency is high enough to overlap the waits of an
	// issuance (validation, finalization), which dominate its time, and
	// low enough to stay polite to a CA: 100 certificates against Pebble
	// took 5.4 s at 4, 3.4 s at 8, 3.5 s at 16 (see README.md, "Benchmarks").
	DefaultConcurrency    = 8
	DefaultAccountKeyType = EC256
	DefaultKeyType        = EC256
	DefaultHTTPTimeout    = 30 * time.Second
	// DefaultOrderTimeout bounds one certificate's order, validation and
	// issuance polling included: longer than certbot's (91–97 s) and lego's
	// (36–37 s) give-up times against a stuck CA, short enough that a run
	// does not hang; raised for slow CAs.
	DefaultOrderTimeout = 2 * time.Minute
	DefaultStartTimeout = 10 * time.Second
	DefaultCallTimeout  = 5 * time.Minute
	// DefaultMaxCalls is how many Present, Wait and CleanUp calls one
	// plugin process serves at once: enough to overlap the waits of a few
	// identifiers, few enough that a 20-name dns-01 order does not fork 20
	// hook programs against a rate-limited DNS API.
	DefaultMaxCalls = 4
	// MaxMaxCalls bounds max_calls.
	MaxMaxCalls          = 64
	DefaultScriptTimeout = 30 * time.Second
)

// MaxFileSize is the largest configuration file Load reads: a file of a
// thousand certificates is about 200 KiB, so anything near the limit is a
// mistake (a wrong path, a log file), refused before it is parsed.
const MaxFileSize = 4 << 20

// maxSecretSize bounds a secret file (an EAB key, an API token).
const maxSecretSize = 64 << 10

// ErrInvalid is wrapped by every error Load and Validate return for a
// file that is readable but not acceptable.
var ErrInvalid = errors.New("config: invalid configuration")

// Config is a decoded acmehook.toml. All paths in it are absolute (or as
// absolute as the path given to Load).
type Config struct {
	// Store is the [storage] table: the backend that holds accounts and
	// certificates. The short form storage = "dir" is read as
	// [storage] path = "dir".
	Store Storage `toml:"storage"`
	// Storage is Store.Path, the file backend's directory (set by Load).
	Storage string `toml:"-"`
	// Concurrency bounds how many certificates are processed at once.
	Concurrency int `toml:"concurrency"`

	CA           CA                 `toml:"ca"`
	SelfCheck    SelfCheck          `toml:"self_check"`
	Lua          Lua                `toml:"lua"`
	Metrics      Metrics            `toml:"metrics"`
	Plugins      map[string]*Plugin `toml:"plugins"`
	Certificates []*Certificate     `toml:"certificate"`

	file  string    // path given to Load, for messages
	abs   string    // file made absolute when loaded, before any chdir
	lines *keyLines // key -> line, built when first needed
}

// CA describes the ACME server and the account on it.
type CA struct {
	// Directory is the ACME directory URL (RFC 8555 §7.1.1). Load replaces
	// the short names "letsencrypt" and "letsencrypt-staging".
	Directory string `toml:"directory"`
	// StagingDirectory is the directory a dry run orders from (run and
	// issue --dry-run), short names replaced as for Directory; see
	// DryRunDirectory for the default.
	StagingDirectory string `toml:"staging_directory"`
	// Email lists contact addresses (RFC 8555 §7.3), without "mailto:".
	Email []string `toml:"email"`
	// AgreeTOS records that the user agrees to the CA's terms of service
	// (RFC 8555 §7.3, termsOfServiceAgreed).
	AgreeTOS bool `toml:"agree_tos"`
	// AgreeTOSChanges has acmehook agree to the CA's new terms of service
	// by itself when the directory names terms different from those the
	// account agreed to (RFC 8555 §7.3.3); tos-changed is raised either
	// way. Without it, acmehook never agrees to changed terms.
	AgreeTOSChanges bool `toml:"agree_tos_changes"`
	// AccountKeyType is the account key algorithm. Let's Encrypt and
	// Pebble refuse Ed25519 account keys, so it is not offered.
	AccountKeyType KeyType `toml:"account_key_type"`
	// EABKeyID and EABHMACKey bind the account to an external account
	// (RFC 8555 §7.3.4). The key is base64url as CAs hand it out; it may
	// come from EABHMACKeyFile or the variable named by EABHMACKeyEnv,
	// which are read only when an account is created (Config.EABKey), so
	// they may be removed once it exists.
	EABKeyID       string `toml:"eab_kid"`
	EABHMACKey     Secret `toml:"eab_hmac_key"`
	EABHMACKeyFile string `toml:"eab_hmac_key_file"`
	EABHMACKeyEnv  string `toml:"eab_hmac_key_env"`
	// EABAlgorithm is the binding's MAC algorithm: HS256 (the default),
	// HS384 or HS512, as the CA says.
	EABAlgorithm string `toml:"eab_algorithm"`
	// CABundle is a PEM file of the roots to trust for the ACME server's
	// TLS certificate instead of the system roots (private CAs, Pebble).
	CABundle string `toml:"ca_bundle"`
	// HTTPTimeout bounds each request to the CA.
	HTTPTimeout Duration `toml:"http_timeout"`
	// OrderTimeout bounds each certificate's order from the new-order
	// request to the download: validation and issuance polling included.
	OrderTimeout Duration `toml:"order_timeout"`
	// TrustRoots is a PEM file of the roots an issued chain must verify
	// to before it is stored, or TrustRootsSystem for the system roots;
	// empty checks the chain's own signatures only.
	TrustRoots string `toml:"trust_roots"`
}

// TrustRootsSystem as ca.trust_roots verifies issued chains to the
// system's roots.
const TrustRootsSystem = "system"

// EAB MAC algorithms accepted in ca.eab_algorithm (RFC 7518 §3.2).
const (
	HS256 = "HS256"
	HS384 = "HS384"
	HS512 = "HS512"
)

// DryRunDirectory returns the directory a dry run orders from, and
// whether it is a staging directory: ca.staging_directory when set; Let's
// Encrypt's staging directory for Let's Encrypt (and for its staging
// directory itself); otherwise the configured directory, which is then
// not a staging one (the CA offers none that acmehook knows of).
func (ca CA) DryRunDirectory() (dir string, staging bool) {
	switch {
	case ca.StagingDirectory != "":
		return ca.StagingDirectory, true
	case ca.Directory == LetsEncrypt, ca.Directory == LetsEncryptStaging:
		return LetsEncryptStaging, true
	}
	return ca.Directory, false
}

// Contact returns Email as the contact URIs of an account object
// (RFC 8555 §7.3: "mailto:" URIs).
func (ca CA) Contact() []string {
	out := make([]string, len(ca.Email))
	for i, e := range ca.Email {
		out[i] = "mailto:" + e
	}
	return out
}

// Plugin describes a solver plugin binary, keyed by its name in
// [plugins.NAME].
type Plugin struct {
	// Name is the table key; set by Load.
	Name string `toml:"-"`
	// Path is the plugin binary.
	Path string `toml:"path"`
	// SHA256 is the expected hex SHA-256 of the binary, checked before
	// launch when set.
	SHA256 string `toml:"sha256"`
	// Env names host environment variables passed through to the plugin;
	// nothing else of the host environment is.
	Env []string `toml:"env"`
	// StartTimeout bounds launch and handshake; CallTimeout each call.
	StartTimeout Duration `toml:"start_timeout"`
	CallTimeout  Duration `toml:"call_timeout"`
	// MaxCalls bounds the Present, Wait and CleanUp calls the plugin
	// process serves at once; 0 means DefaultMaxCalls.
	MaxCalls int `toml:"max_calls"`
	// Config is passed to the plugin as is, except that a table of the
	// form { secret = "..." }, { secret_file = "path" } or
	// { secret_env = "NAME" } becomes a Secret with the value resolved
	// (RevealedConfig undoes that for sending). Config cannot know which
	// values are paths, so relative paths in it reach the plugin as
	// written: the engine starts plugins in the config file's directory
	// (Config.Dir).
	Config map[string]any `toml:"config"`
}

// Certificate is one [[certificate]] entry.
type Certificate struct {
	// Name identifies the certificate in storage and on the command line.
	Name string `toml:"name"`
	// Domains lists DNS names, wildcards ("*.example.com") and IP
	// addresses, as written; Identifiers holds them parsed, in order.
	Domains     []string          `toml:"domains"`
	Identifiers []acme.Identifier `toml:"-"`
	// KeyType is the certificate key algorithm.
	KeyType KeyType `toml:"key_type"`
	// ReuseKey keeps the private key across renewals (never after a
	// keyCompromise revocation).
	ReuseKey bool `toml:"reuse_key"`
	// Solver is the default plugin for every identifier; Solvers overrides
	// it per domain, keyed by the domain as written in Domains.
	Solver  string            `toml:"solver"`
	Solvers map[string]string `toml:"solvers"`
	// Challenge, when set, is the challenge type to use if the solver
	// offers several ("http-01", "dns-01", "tls-alpn-01").
	Challenge string `toml:"challenge"`
	// SelfCheck, when false, turns off the check of each presented
	// challenge before the CA is asked to validate it (for a split-horizon
	// network where the host cannot see what the CA sees). Nil means true;
	// see SelfCheckEnabled.
	SelfCheck *bool `toml:"self_check"`
	// Profile is the ACME profile to request (draft-ietf-acme-profiles),
	// or ProfileAuto (also what empty means): "shortlived" for a
	// certificate with an IP address when the CA's directory offers it,
	// else the CA's default. PreferredChain is the issuer common name of
	// the chain to prefer.
	Profile        string `toml:"profile"`
	PreferredChain string `toml:"preferred_chain"`
	// NotBefore and NotAfter are sent in each new order (RFC 8555 §7.4);
	// Validity asks for a certificate valid that long from the order (or
	// from NotBefore). Many CAs (Let's Encrypt among them) refuse them;
	// see OrderValidity.
	NotBefore time.Time `toml:"not_before"`
	NotAfter  time.Time `toml:"not_after"`
	Validity  Duration  `toml:"validity"`
	// Scripts are Lua scripts run on this certificate's events.
	Scripts       []string `toml:"scripts"`
	ScriptTimeout Duration `toml:"script_timeout"`
	// Output lists optional copies written after issuance.
	Output Output `toml:"output"`

	// RenewBefore overrides the default renewal time: a duration before
	// expiry ("720h") or a lifetime fraction ("1/3", "33%").
	RenewBefore renewal.RenewBefore `toml:"renew_before"`
	// MaxOrders orders per MaxOrdersWindow bound re-issuance of this
	// certificate (the runaway guard); 0 means the renewal package's
	// defaults.
	MaxOrders       int      `toml:"max_orders"`
	MaxOrdersWindow Duration `toml:"max_orders_window"`
}

// ProfileAuto as a certificate's profile (and an empty one) requests
// ProfileShortLived for a certificate with an IP address when the CA
// offers it, and no profile otherwise.
const (
	ProfileAuto       = "auto"
	ProfileShortLived = "shortlived"
)

// ProfileSetting returns the profile as configured, ProfileAuto for an
// empty one.
func (cert *Certificate) ProfileSetting() string {
	if cert.Profile == "" {
		return ProfileAuto
	}
	return cert.Profile
}

// OrderValidity returns the notBefore and notAfter to send in a new order
// placed at now (zero for "not sent"): not_before and not_after as
// configured, or with validity, notAfter = (not_before or now) + validity.
func (cert *Certificate) OrderValidity(now time.Time) (notBefore, notAfter time.Time) {
	notBefore, notAfter = cert.NotBefore, cert.NotAfter
	if cert.Validity.Duration > 0 {
		start := now
		if !notBefore.IsZero() {
			start = notBefore
		}
		notAfter = start.Add(cert.Validity.Duration).UTC().Truncate(time.Second)
	}
	return notBefore, notAfter
}

// Policy returns the certificate's renewal policy (renew_before,
// max_orders, max_orders_window), validated when the file was loaded.
func (cert *Certificate) Policy() renewal.Policy {
	return renewal.Policy{RenewBefore: cert.RenewBefore, MaxOrders: cert.MaxOrders, MaxOrdersWindow: cert.MaxOrdersWindow.Duration}
}

// Output holds optional paths where the certificate is copied after
// issuance. Empty paths are not written.
type Output struct {
	Cert      string `toml:"cert"`
	Key       string `toml:"key"`
	Chain     string `toml:"chain"`
	Fullchain string `toml:"fullchain"`
}

// Load reads, decodes, completes and validates the file at path. On error
// the returned error joins every problem found, each an *Error naming
// file:line where known, and wraps ErrInvalid.
func Load(path string) (*Config, error) {
	data, err := readLimited(path, MaxFileSize)
	if errors.Is(err, errTooLarge) {
		return nil, errors.Join(ErrInvalid, &Error{File: path, Message: fmt.Sprintf("larger than %d MiB; is this the configuration file?", MaxFileSize>>20)})
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return load(path, data)
}

// load is Load after the file has been read.
func load(path string, data []byte) (*Config, error) {
	src := string(data)
	if err := checkNesting(path, src); err != nil {
		return nil, errors.Join(ErrInvalid, err)
	}
	cfg := &Config{file: path, lines: &keyLines{file: path, src: src}}
	if abs, err := filepath.Abs(path); err == nil {
		cfg.abs = abs
	}
	// The file is parsed once: every top-level value kept undecoded
	// (toml.Primitive), seen loosely by the type check, then decoded into
	// its field from the same parse.
	var top map[string]toml.Primitive
	md, err := toml.Decode(src, &top)
	if err != nil {
		return nil, errors.Join(ErrInvalid, cfg.decodeError(err))
	}
	loose := make(map[string]any, len(top))
	for k, p := range top {
		var v any
		if err := md.PrimitiveDecode(p, &v); err != nil {
			return nil, errors.Join(ErrInvalid, cfg.decodeError(err))
		}
		loose[k] = v
	}
	// storage = "dir" is the short form of [storage] path = "dir".
	shortDir, short := loose["storage"].(string)
	if short {
		loose["storage"] = map[string]any{"path": shortDir}
	}
	tc := &typeChecker{c: cfg, bad: map[string]bool{}}
	tc.table(reflect.TypeFor[Config](), loose, "")
	errs := tc.errs
	var unknown []toml.Key
	if len(errs) > 0 {
		// Decode what is left; lines still come from the original text.
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(loose); err != nil {
			return nil, errors.Join(append([]error{ErrInvalid}, errs...)...)
		}
		md, err := toml.NewDecoder(&buf).Decode(cfg)
		if err != nil { // a misfit the type check did not know: no line
			return nil, errors.Join(append([]error{ErrInvalid}, append(errs, &Error{File: path, Message: err.Error()})...)...)
		}
		unknown = md.Undecoded()
	} else {
		if unknown, err = decodeTop(cfg, md, top, short, shortDir); err != nil {
			return nil, errors.Join(ErrInvalid, cfg.decodeError(err))
		}
	}
	for _, k := range undecoded(unknown) {
		errs = append(errs, cfg.unknownKey(k))
	}
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolving config directory: %w", err)
	}
	cfg.complete(base)
	errs = append(errs, cfg.resolveSecrets()...)
	errs = append(errs, cfg.resolveStoragePassword()...)
	errs = append(errs, cfg.completeLua(base)...)
	cfg.completeMetrics(base)
	if err := cfg.Validate(); err != nil {
		for _, e := range unjoin(err) {
			// A value removed as a misfit is reported once, as a misfit.
			var ce *Error
			if !errors.As(e, &ce) || !tc.bad[ce.Key] {
				errs = append(errs, e)
			}
		}
	}
	sortByLine(errs)
	if len(errs) > 0 {
		return nil, errors.Join(append([]error{ErrInvalid}, errs...)...)
	}
	return cfg, nil
}

// unjoin returns the errors joined in err, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// decodeTop decodes the top-level values of a parsed file into cfg's
// fields as decoding the whole file into cfg would (a key matches its
// field's name exactly, else case-insensitively), the short form of
// storage as [storage] path. It returns the unknown keys in file order:
// the top-level keys no field takes and what md left undecoded.
func decodeTop(cfg *Config, md toml.MetaData, top map[string]toml.Primitive, short bool, shortDir string) ([]toml.Key, error) {
	rv := reflect.ValueOf(cfg).Elem()
	rt := rv.Type()
	noField := map[string]bool{}
	for _, k := range sortedKeys(top) {
		if short && k == "storage" {
			cfg.Store.Path = shortDir
			continue
		}
		field := -1
		for i := range rt.NumField() {
			name := rt.Field(i).Tag.Get("toml")
			if name == "" || name == "-" {
				continue
			}
			if name == k {
				field = i
				break
			}
			if field < 0 && strings.EqualFold(name, k) {
				field = i
			}
		}
		if field < 0 {
			noField[k] = true
			continue
		}
		if err := md.PrimitiveDecode(top[k], rv.Field(field).Addr().Interface()); err != nil {
			return nil, err
		}
	}
	if len(noField) == 0 {
		return md.Undecoded(), nil
	}
	left := map[string]bool{}
	for _, k := range md.Undecoded() {
		left[k.String()] = true
	}
	var unknown []toml.Key
	for _, k := range md.Keys() {
		if len(k) == 1 && noField[k[0]] || left[k.String()] {
			unknown = append(unknown, k)
		}
	}
	return unknown, nil
}

// undecodedKey is an unknown key and its occurrence number.
type undecodedKey struct {
	key toml.Key
	n   int
}

// undecoded keeps only the outermost unknown keys (an unknown table's
// children are not reported again) and numbers repeated ones.
func undecoded(keys []toml.Key) []undecodedKey {
	var out []undecodedKey
	seen := map[string]int{}
outer:
	for _, k := range keys {
		// Plugin config tables and [lua.vars] are free-form: decoded into
		// map[string]any, which BurntSushi/toml does not mark as decoded.
		if len(k) > 3 && k[0] == "plugins" && k[2] == "config" || len(k) > 2 && k[0] == "lua" && k[1] == "vars" {
			continue
		}
		for _, o := range out {
			if len(o.key) < len(k) && equalSegs(o.key, k[:len(o.key)]) {
				continue outer
			}
		}
		s := k.String()
		out = append(out, undecodedKey{key: k, n: seen[s]})
		seen[s]++
	}
	return out
}

func (c *Config) unknownKey(u undecodedKey) error {
	e := &Error{File: c.file, Key: u.key.String(), Message: "unknown key"}
	if kp, ok := c.lines.get().nth(u.key, u.n); ok {
		e.Line, e.Key = kp.line, kp.path
	}
	return e
}

// lineRE matches the position the decoder puts in its type errors.
var lineRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

func (c *Config) decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: c.file, Line: pe.Position.Line, Key: pe.LastKey, Message: pe.Message}
	}
	if m := lineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: c.file, Line: line, Key: m[2], Message: m[3]}
	}
	return &Error{File: c.file, Message: err.Error()}
}

// complete fills in defaults and makes paths absolute. It is the only place
// defaults are set.
func (c *Config) complete(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	setDur := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	c.completeStorage(abs)
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	for _, d := range []*string{&c.CA.Directory, &c.CA.StagingDirectory} {
		switch *d {
		case "letsencrypt":
			*d = LetsEncrypt
		case "letsencrypt-staging":
			*d = LetsEncryptStaging
		}
	}
	if c.CA.EABAlgorithm == "" && c.CA.EABKeyID != "" {
		c.CA.EABAlgorithm = HS256
	}
	if c.CA.AccountKeyType == "" {
		c.CA.AccountKeyType = DefaultAccountKeyType
	}
	abs(&c.CA.CABundle)
	abs(&c.CA.EABHMACKeyFile)
	if c.CA.TrustRoots != TrustRootsSystem {
		abs(&c.CA.TrustRoots)
	}
	setDur(&c.CA.HTTPTimeout, DefaultHTTPTimeout)
	setDur(&c.CA.OrderTimeout, DefaultOrderTimeout)
	c.completeSelfCheck()
	for name, p := range c.Plugins {
		if p == nil {
			p = &Plugin{}
			c.Plugins[name] = p
		}
		p.Name = name
		abs(&p.Path)
		setDur(&p.StartTimeout, DefaultStartTimeout)
		setDur(&p.CallTimeout, DefaultCallTimeout)
		if p.MaxCalls == 0 {
			p.MaxCalls = DefaultMaxCalls
		}
		if p.Config == nil {
			p.Config = map[string]any{}
		}
	}
	for _, cert := range c.Certificates {
		if cert.KeyType == "" {
			cert.KeyType = DefaultKeyType
		}
		setDur(&cert.ScriptTimeout, DefaultScriptTimeout)
		for i := range cert.Scripts {
			abs(&cert.Scripts[i])
		}
		abs(&cert.Output.Cert)
		abs(&cert.Output.Key)
		abs(&cert.Output.Chain)
		abs(&cert.Output.Fullchain)
	}
}

// resolveSecrets reads the secrets of the plugin tables given by file or
// environment variable. The EAB HMAC key is read later, when an account
// is created (EABKey).
func (c *Config) resolveSecrets() []error {
	var errs []error
	ca := &c.CA
	sources := 0
	for _, set := range []bool{!ca.EABHMACKey.IsZero(), ca.EABHMACKeyFile != "", ca.EABHMACKeyEnv != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		errs = append(errs, c.errorf("ca.eab_hmac_key", "set only one of eab_hmac_key, eab_hmac_key_file and eab_hmac_key_env"))
	}
	for _, name := range sortedKeys(c.Plugins) {
		p := c.Plugins[name]
		errs = append(errs, c.resolveMap(p.Config, "plugins."+quoteSeg(name)+".config")...)
	}
	return errs
}

func (c *Config) resolveMap(m map[string]any, path string) []error {
	var errs []error
	for _, k := range sortedKeys(m) {
		sub, ok := m[k].(map[string]any)
		if !ok {
			continue
		}
		kpath := path + "." + quoteSeg(k)
		if !isSecretTable(sub) {
			errs = append(errs, c.resolveMap(sub, kpath)...)
			continue
		}
		if len(sub) != 1 {
			errs = append(errs, c.errorf(kpath, "a secret table takes exactly one of secret, secret_file and secret_env"))
			continue
		}
		var file, env string
		var lit any
		for sk, sv := range sub {
			switch sk {
			case "secret":
				lit = sv
			case "secret_file":
				file, _ = sv.(string)
			case "secret_env":
				env, _ = sv.(string)
			}
		}
		if lit != nil {
			s, ok := lit.(string)
			if !ok {
				errs = append(errs, c.errorf(kpath, "secret must be a string"))
				continue
			}
			m[k] = NewSecret(s)
			continue
		}
		shown := file
		if file != "" && !filepath.IsAbs(file) {
			file = filepath.Join(filepath.Dir(c.abspath()), file)
		}
		v, err := readSecret(file, shown, env)
		if err == nil && v == "" {
			err = errors.New("secret_file or secret_env must be a non-empty string")
		}
		if err != nil {
			errs = append(errs, c.errorf(kpath, "%v", err))
			continue
		}
		m[k] = NewSecret(v)
	}
	return errs
}

// EABKey returns the decoded EAB HMAC key: ca.eab_hmac_key, or the
// content of eab_hmac_key_file or of the variable eab_hmac_key_env, read
// now. Only creating an account needs it (RFC 8555 §7.3.4), so the file or
// variable may be gone once the account exists. A missing or malformed key
// is an *Error naming the key and its line.
func (c *Config) EABKey() ([]byte, error) {
	ca := c.CA
	v, err := readSecret(ca.EABHMACKeyFile, c.shown(ca.EABHMACKeyFile), ca.EABHMACKeyEnv)
	key := "ca.eab_hmac_key"
	switch {
	case ca.EABHMACKeyFile != "":
		key = "ca.eab_hmac_key_file"
	case ca.EABHMACKeyEnv != "":
		key = "ca.eab_hmac_key_env"
	}
	switch {
	case err != nil:
		return nil, c.errorf(key, "creating the account needs the EAB HMAC key: %v", err)
	case v == "" && ca.EABHMACKey.IsZero():
		return nil, c.errorf("ca.eab_kid", "creating the account needs the EAB HMAC key: set eab_hmac_key, eab_hmac_key_file or eab_hmac_key_env")
	case v == "":
		v = ca.EABHMACKey.Reveal()
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil || len(b) == 0 {
		return nil, c.errorf(key, "the EAB HMAC key is not base64url")
	}
	return b, nil
}

// shown returns p relative to the config file's directory when it is
// inside it, for messages that must not depend on where the file lives.
func (c *Config) shown(p string) string {
	if rel, err := filepath.Rel(filepath.Dir(c.abspath()), p); err == nil && filepath.IsLocal(rel) {
		return rel
	}
	return p
}

func (c *Config) abspath() string {
	if c.abs != "" {
		return c.abs
	}
	p, err := filepath.Abs(c.file)
	if err != nil {
		return c.file
	}
	return p
}

func isSecretTable(m map[string]any) bool {
	for _, k := range []string{"secret", "secret_file", "secret_env"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// errTooLarge is returned by readLimited for a file over its limit.
var errTooLarge = errors.New("file too large")

// readLimited reads the file at path, or fails with errTooLarge once it
// has read more than limit bytes (a FIFO or /dev/zero ends too).
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

// readSecret returns the content of file (trailing newlines trimmed) or
// the value of the environment variable env; "" if both are empty. shown
// is the file name as the user wrote it, for messages.
func readSecret(file, shown, env string) (string, error) {
	switch {
	case file != "":
		b, err := readLimited(file, maxSecretSize)
		if errors.Is(err, errTooLarge) {
			return "", fmt.Errorf("secret file %s is larger than %d KiB", shown, maxSecretSize>>10)
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return "", fmt.Errorf("reading secret file %s: %w", shown, err)
		}
		v := string(bytes.TrimRight(b, "\r\n"))
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", shown)
		}
		return v, nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", env)
		}
		return v, nil
	}
	return "", nil
}

// errorf makes an *Error for the key at path.
func (c *Config) errorf(path, format string, args ...any) error {
	return &Error{File: c.file, Line: c.lines.get().line(path), Key: path, Message: fmt.Sprintf(format, args...)}
}

// Dir returns the absolute directory of the configuration file, against
// which relative paths are resolved. It is fixed when Load runs, so a later
// os.Chdir does not change it.
func (c *Config) Dir() string { return filepath.Dir(c.abspath()) }

// File returns the path the configuration was loaded from.
func (c *Config) File() string { return c.file }

// Certificate returns the certificate called name, or nil.
func (c *Config) Certificate(name string) *Certificate {
	for _, cert := range c.Certificates {
		if cert.Name == name {
			return cert
		}
	}
	return nil
}

// RevealedConfig returns a deep copy of the plugin's Config with every
// Secret replaced by its value, for sending to the plugin. Never log it.
func (p *Plugin) RevealedConfig() map[string]any {
	return revealMap(p.Config)
}

// SecretValues returns the revealed values of the Secrets in Config, for
// the host to redact from what the plugin says.
func (p *Plugin) SecretValues() []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case Secret:
			if !v.IsZero() {
				out = append(out, v.Reveal())
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case []map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(p.Config)
	return out
}

func revealMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = reveal(v)
	}
	return out
}

func reveal(v any) any {
	switch v := v.(type) {
	case Secret:
		return v.Reveal()
	case map[string]any:
		return revealMap(v)
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = reveal(e)
		}
		return s
	case []map[string]any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = revealMap(e)
		}
		return s
	}
	return v
}
