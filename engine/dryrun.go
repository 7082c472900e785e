package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/store"
)

// DryRunResult is the outcome of DryRun.
type DryRunResult struct {
	*RunResult
	// Directory is the ACME directory the dry run ordered from. Staging
	// is false when the CA has no staging directory acmehook knows of and
	// the configured one was used (the certificates ordered there are
	// real ones, issued to a throwaway account and thrown away).
	Directory string
	Staging   bool
}

// DryRun runs the certificates of ro.Names (every one when empty) as
// `acmehook issue` would, due or not (as certbot's renew --dry-run does),
// and changes nothing:
//   - the orders go to the CA's staging directory
//     (config.CA.DryRunDirectory), signed by a throwaway account: a new
//     key, registered there, never the stored one;
//   - the storage is a private temporary file storage, removed before
//     DryRun returns. It starts with each certificate's current version
//     read from opts.Store (which is only read: open it read-only, so no
//     lock is taken), with a fresh key in place of its private key, so a
//     certificate in service is dry-run as a renewal;
//   - the output copies are not written (the log says where they would
//     have gone), and no metrics are recorded;
//   - every event carries DryRun (ev.dry_run in Lua): the scripts decide
//     what a dry run does; the shipped ones change nothing.
//
// The other Options are as for New. Results are as Run's.
func DryRun(ctx context.Context, opts Options, ro RunOptions) (*DryRunResult, error) {
	if opts.Config == nil || opts.Store == nil {
		return nil, errors.New("engine: Options.Config and Options.Store are required")
	}
	cfg := *opts.Config
	dir, staging := cfg.CA.DryRunDirectory()
	cfg.CA.Directory = dir
	if staging {
		// A staging CA issues under staging roots, never the production
		// ones trust_roots names; chain signatures are still checked.
		cfg.CA.TrustRoots = ""
	}
	names := ro.Names
	if len(names) == 0 {
		for _, c := range cfg.Certificates {
			names = append(names, c.Name)
		}
	}
	tmp, err := os.MkdirTemp("", "acmehook-dry-run-")
	if err != nil {
		return nil, fmt.Errorf("making the dry run's storage: %w", err)
	}
	defer os.RemoveAll(tmp)
	st, err := store.Open(tmp, store.Options{Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("making the dry run's storage: %w", err)
	}
	defer st.Close()
	for _, name := range names {
		if c := cfg.Certificate(name); c != nil {
			if err := seedDryRun(ctx, opts.Store, st, c); err != nil {
				return nil, err
			}
		}
	}
	// No relay: it would publish the challenges in the fleet's etcd. On a
	// fleet behind a load balancer, http-01 and tls-alpn-01 then reach
	// this node only if the balancer sends them here.
	// What a real run would do now, from the real storage (read only,
	// no CA request), to say beside each dry run's result.
	would, err := wouldDo(ctx, opts, names)
	if err != nil {
		return nil, err
	}
	o := opts
	o.Config, o.Store, o.Metrics, o.Relay, o.dryRun = &cfg, st, nil, nil, true
	eng, err := New(o)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	if !staging {
		eng.log.Warn("dry run against the configured directory: the CA has no staging directory acmehook knows of (set ca.staging_directory)", "directory", dir)
	} else {
		eng.log.Info("dry run against the staging directory", "directory", dir)
	}
	ro.Force = true
	res, err := eng.Run(ctx, ro)
	if err != nil {
		return nil, err
	}
	for i, r := range res.Results {
		res.Results[i].Reason = "dry run, ordered due or not; a run now: " + would[r.Name]
	}
	return &DryRunResult{RunResult: res, Directory: dir, Staging: staging}, nil
}

// wouldDo returns, by certificate name, what a real run would do now
// (Status.String), decided from opts.Store and the configuration alone.
func wouldDo(ctx context.Context, opts Options, names []string) (map[string]string, error) {
	o := opts
	o.Metrics, o.Relay = nil, nil
	eng, err := New(o)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	out := map[string]string{}
	for _, n := range names {
		st, err := eng.Status(ctx, n)
		if errors.Is(err, ErrUnknownCertificate) {
			return nil, err
		}
		if err != nil || st.Err != nil {
			out[n] = "unknown: " + cmp.Or(err, st.Err).Error()
			continue
		}
		out[n] = st.String()
	}
	return out, nil
}

// seedDryRun copies cert's current version from the real storage into the
// dry run's, with a fresh key of its type in place of its private key.
func seedDryRun(ctx context.Context, real, tmp *store.Store, cert *config.Certificate) error {
	v, err := real.LoadCertificate(ctx, cert.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil && !errors.Is(err, store.ErrKeyMovedAside):
		return fmt.Errorf("reading certificate %s: %w", cert.Name, err)
	}
	kt := config.KeyType(v.Info.KeyType)
	if leaf, err := parseLeaf(v.CertPEM); err == nil {
		kt = keyType(leaf.PublicKey)
	}
	key, err := generateKey(kt)
	if err != nil {
		key, err = generateKey(cert.KeyType)
	}
	if err != nil {
		return err
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return err
	}
	seed := &store.Version{KeyPEM: keyPEM, CertPEM: v.CertPEM, ChainPEM: v.ChainPEM, Info: v.Info}
	if err := tmp.Commit(ctx, cert.Name, seed, nil); err != nil {
		return fmt.Errorf("copying certificate %s into the dry run's storage: %w", cert.Name, err)
	}
	return nil
}

// dryRunHook marks every event it passes on as a dry run's.
type dryRunHook struct{ event.Hook }

// Handle implements event.Hook.
func (h dryRunHook) Handle(ctx context.Context, ev event.Event) error {
	ev.DryRun = true
	return h.Hook.Handle(ctx, ev)
}

// markDryRun wraps every hook of a dry run's engine in a dryRunHook: the
// certificates' and the receivers of the run-level events.
func markDryRun(hooks map[string]event.Hook, scripts []runScript) {
	for name, h := range hooks {
		hooks[name] = dryRunHook{h}
	}
	for i := range scripts {
		scripts[i].hook = dryRunHook{scripts[i].hook}
	}
}

// skipOutputs logs the output copies of cert a dry run does not write.
func (e *Engine) skipOutputs(j *job) {
	o := j.cert.Output
	for _, p := range []struct{ key, path string }{{"cert", o.Cert}, {"key", o.Key}, {"chain", o.Chain}, {"fullchain", o.Fullchain}} {
		if p.path != "" {
			j.log.Info("dry run: output copy not written", "output", p.key, "path", p.path)
		}
	}
}
