package config

import (
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/renewal"
)

// nameRE is what certificate and plugin names may look like: they become
// directory names in storage, so no separators and no leading dot.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// envRE matches portable environment variable names.
var envRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidName reports whether name can name a certificate or a plugin: 1 to
// 100 characters of letters, digits, '.', '_' and '-', not starting with
// '.' (so never "..", never a path).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks everything that can be checked without launching a
// plugin or touching the network. It returns every problem joined with
// errors.Join, each an *Error naming the key and, for a loaded file, its
// line, in file order. It also fills Certificate.Identifiers from Domains.
// Load calls it; call it again after changing a Config by hand.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, c.errorf(path, format, args...))
	}

	if c.Concurrency < 1 || c.Concurrency > 1000 {
		add("concurrency", "must be between 1 and 1000, got %d", c.Concurrency)
	}
	errs = append(errs, c.validateStorage()...)

	// [ca]
	ca := c.CA
	if ca.Directory == "" {
		add("ca.directory", "missing: set an ACME directory URL or \"letsencrypt\" / \"letsencrypt-staging\"")
	} else if u, err := url.Parse(ca.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		add("ca.directory", "%q is not an https URL nor a known short name (letsencrypt, letsencrypt-staging)", ca.Directory)
	}
	for i, e := range ca.Email {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e || a.Name != "" {
			add(fmt.Sprintf("ca.email[%d]", i), "%q is not a plain email address", e)
		}
	}
	if ca.AccountKeyType == "ed25519" {
		add("ca.account_key_type", "ed25519 is refused by Let's Encrypt and Pebble; use one of %s", keyTypeList())
	} else if !ca.AccountKeyType.valid() {
		add("ca.account_key_type", "unknown key type %q; use one of %s", ca.AccountKeyType, keyTypeList())
	}
	if u, err := url.Parse(ca.StagingDirectory); ca.StagingDirectory != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
		add("ca.staging_directory", "%q is not an https URL nor a known short name (letsencrypt-staging)", ca.StagingDirectory)
	}
	// The EAB HMAC key itself is needed only to create an account: a
	// missing one is reported then (EABKey), a malformed literal now.
	if ca.EABKeyID == "" {
		for _, k := range []struct {
			key string
			set bool
		}{{"eab_hmac_key", !ca.EABHMACKey.IsZero()}, {"eab_hmac_key_file", ca.EABHMACKeyFile != ""}, {"eab_hmac_key_env", ca.EABHMACKeyEnv != ""}, {"eab_algorithm", ca.EABAlgorithm != ""}} {
			if k.set {
				add("ca."+k.key, "%s needs eab_kid", k.key)
			}
		}
	} else if !ca.EABHMACKey.IsZero() {
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(ca.EABHMACKey.Reveal(), "=")); err != nil {
			add("ca.eab_hmac_key", "the EAB HMAC key is not base64url")
		}
	}
	switch ca.EABAlgorithm {
	case "", HS256, HS384, HS512:
	default:
		add("ca.eab_algorithm", "unknown EAB algorithm %q; use HS256, HS384 or HS512", ca.EABAlgorithm)
	}
	if ca.EABHMACKeyEnv != "" && !envRE.MatchString(ca.EABHMACKeyEnv) {
		add("ca.eab_hmac_key_env", "%q is not an environment variable name", ca.EABHMACKeyEnv)
	}
	if ca.HTTPTimeout.Duration <= 0 {
		add("ca.http_timeout", "must be positive")
	}
	if ca.OrderTimeout.Duration <= 0 {
		add("ca.order_timeout", "must be positive")
	}

	errs = append(errs, c.validateSelfCheck()...)
	errs = append(errs, c.validateLua()...)
	errs = append(errs, c.validateMetrics()...)

	// [plugins.NAME]
	for _, name := range sortedKeys(c.Plugins) {
		p := c.Plugins[name]
		path := "plugins." + quoteSeg(name)
		if !ValidName(name) {
			add(path, "plugin name %q must be letters, digits, '.', '_' or '-', not starting with '.'", name)
		}
		if p.Path == "" {
			add(path+".path", "missing: the plugin binary")
		}
		if p.SHA256 != "" {
			if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != 32 {
				add(path+".sha256", "must be 64 hexadecimal digits")
			}
		}
		for i, e := range p.Env {
			if !envRE.MatchString(e) {
				add(fmt.Sprintf("%s.env[%d]", path, i), "%q is not an environment variable name", e)
			}
		}
		if p.StartTimeout.Duration <= 0 {
			add(path+".start_timeout", "must be positive")
		}
		if p.CallTimeout.Duration <= 0 {
			add(path+".call_timeout", "must be positive")
		}
		if p.MaxCalls < 1 || p.MaxCalls > MaxMaxCalls {
			add(path+".max_calls", "must be between 1 and %d", MaxMaxCalls)
		}
	}

	// [[certificate]]
	seen := map[string]int{}
	for i, cert := range c.Certificates {
		errs = append(errs, c.validateCertificate(i, cert, seen)...)
	}
	sortByLine(errs)
	return errors.Join(errs...)
}

func (c *Config) validateCertificate(i int, cert *Certificate, seen map[string]int) []error {
	var errs []error
	base := "certificate[" + strconv.Itoa(i) + "]"
	add := func(path, format string, args ...any) {
		errs = append(errs, c.errorf(path, format, args...))
	}
	switch {
	case cert.Name == "":
		add(base+".name", "missing: every certificate needs a name")
	case !ValidName(cert.Name):
		add(base+".name", "%q must be letters, digits, '.', '_' or '-', not starting with '.'", cert.Name)
	default:
		if j, dup := seen[cert.Name]; dup {
			add(base+".name", "%q is already the name of certificate[%d]", cert.Name, j)
		} else {
			seen[cert.Name] = i
		}
	}
	if len(cert.Domains) == 0 {
		add(base+".domains", "missing: at least one domain or IP address")
	}
	cert.Identifiers = cert.Identifiers[:0]
	byValue := map[string]bool{}
	for j, d := range cert.Domains {
		dpath := func() string { return base + ".domains[" + strconv.Itoa(j) + "]" }
		id, err := parseDomain(d)
		if err != nil {
			add(dpath(), "%v", err)
			continue
		}
		if byValue[id.Value] {
			add(dpath(), "%q is listed twice", d)
			continue
		}
		byValue[id.Value] = true
		cert.Identifiers = append(cert.Identifiers, id)
	}
	if !cert.KeyType.valid() {
		add(base+".key_type", "unknown key type %q; use one of %s", cert.KeyType, keyTypeList())
	}
	if cert.Solver != "" && c.Plugins[cert.Solver] == nil {
		add(base+".solver", "no plugin %q is configured in [plugins]", cert.Solver)
	}
	for _, d := range sortedKeys(cert.Solvers) {
		spath := base + ".solvers." + quoteSeg(d)
		solver := cert.Solvers[d]
		if !slices.Contains(cert.Domains, d) {
			add(spath, "%q is not one of this certificate's domains", d)
		}
		if c.Plugins[solver] == nil {
			add(spath, "no plugin %q is configured in [plugins]", solver)
		}
	}
	if cert.Solver == "" {
		for _, d := range cert.Domains {
			if cert.Solvers[d] == "" {
				add(base+".solver", "missing: %q has no solver (set solver, or solvers.%s)", d, quoteSeg(d))
				break
			}
		}
	}
	switch cert.Challenge {
	case "", acme.ChallengeHTTP01, acme.ChallengeDNS01, acme.ChallengeTLSALPN01:
	default:
		add(base+".challenge", "unknown challenge type %q; use http-01, dns-01 or tls-alpn-01", cert.Challenge)
	}
	for _, id := range cert.Identifiers {
		if cert.Challenge != "" && !allowed(id, cert.Challenge) {
			add(base+".challenge", "%s cannot be validated by %s (%s)", id.Value, cert.Challenge, why(id))
		}
	}
	for j, s := range cert.Scripts {
		if s == "" {
			add(fmt.Sprintf("%s.scripts[%d]", base, j), "empty script path")
		}
	}
	for _, err := range unjoin(cert.Policy().Validate()) {
		var pe *renewal.PolicyError
		if errors.As(err, &pe) {
			add(base+"."+pe.Key, "%s %s", pe.Value, pe.Message)
		} else if err != nil {
			add(base, "%v", err)
		}
	}
	switch {
	case cert.Validity.Duration < 0:
		add(base+".validity", "must be positive")
	case cert.Validity.Duration > 0 && !cert.NotAfter.IsZero():
		add(base+".validity", "set either not_after or validity, not both")
	}
	if !cert.NotBefore.IsZero() && !cert.NotAfter.IsZero() && !cert.NotBefore.Before(cert.NotAfter) {
		add(base+".not_after", "%s is not after not_before (%s)", cert.NotAfter.Format(time.RFC3339), cert.NotBefore.Format(time.RFC3339))
	}
	if cert.ScriptTimeout.Duration <= 0 {
		add(base+".script_timeout", "must be positive")
	}
	outs := map[string]string{}
	for _, o := range []struct{ key, path string }{
		{"cert", cert.Output.Cert}, {"key", cert.Output.Key},
		{"chain", cert.Output.Chain}, {"fullchain", cert.Output.Fullchain},
	} {
		if o.path == "" {
			continue
		}
		if prev, dup := outs[o.path]; dup {
			add(base+".output."+o.key, "same path as output.%s", prev)
		}
		outs[o.path] = o.key
	}
	return errs
}

// parseDomain checks one entry of domains: an IP address, or a DNS name
// with an optional "*." wildcard as its whole leftmost label.
func parseDomain(d string) (acme.Identifier, error) {
	if d == "" {
		return acme.Identifier{}, errors.New("empty domain")
	}
	if d != strings.TrimSpace(d) {
		return acme.Identifier{}, fmt.Errorf("%q has surrounding spaces", d)
	}
	id := acme.ParseIdentifier(d)
	if id.Type == acme.IdentifierIP {
		return id, nil
	}
	name := strings.TrimPrefix(id.Value, "*.")
	if strings.Contains(name, "*") {
		return id, fmt.Errorf("%q: a wildcard must be the whole leftmost label (\"*.example.com\")", d)
	}
	if len(name) > 253 {
		return id, fmt.Errorf("%q is longer than 253 characters", d)
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return id, fmt.Errorf("%q is not a fully qualified domain name", d)
	}
	for _, l := range labels {
		if !validLabel(l) {
			return id, fmt.Errorf("%q is not a valid domain name (label %q)", d, l)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return id, fmt.Errorf("%q is neither a valid domain name nor an IP address", d)
	}
	return id, nil
}

// validLabel checks an LDH label (RFC 1035 §2.3.1, RFC 5890 A-labels).
func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func keyTypeList() string {
	s := make([]string, len(keyTypes))
	for i, k := range keyTypes {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmp.Compare)
	return keys
}
