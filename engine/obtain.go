package engine

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/event"
	"github.com/acmehook/acmehook/engine/store"
)

// plan is what a run will do with one certificate, decided from the store
// alone before any plugin or CA is contacted.
type plan struct {
	issue   bool   // order a new certificate
	held    bool   // one is needed, but the backoff or the reissue guard holds it back
	deploy  bool   // retry a pending deploy of the current version
	reason  string // why
	current *store.Version
	meta    *Meta
	err     error
}

// plan decides whether cert needs a new certificate: none stored, its key
// moved aside, names, key type or profile changed, or due by its renewal
// decision (engine/renewal: revocation, the ARI window, fetched first when
// the decision asks for it, or the lifetime rule), or force. Except when
// forced, the failure backoff and the reissue guard hold an order back.
// Otherwise a pending deploy is retried.
func (e *Engine) plan(ctx context.Context, cert *config.Certificate, force bool) plan {
	p := plan{}
	meta, err := e.loadMeta(ctx, cert.Name)
	if err != nil {
		p.err = fmt.Errorf("loading metadata: %w", err)
		return p
	}
	p.meta = meta
	v, err := e.store.LoadCertificate(ctx, cert.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		p.issue, p.reason = true, "no certificate yet"
	case errors.Is(err, store.ErrKeyMovedAside):
		p.current = v
		p.issue, p.reason = true, "the key was moved aside"
	case err != nil:
		p.err = fmt.Errorf("loading certificate: %w", err)
		return p
	default:
		p.current = v
	}
	if force {
		p.issue, p.reason = true, "forced"
		return p
	}
	if p.issue {
		if h := e.hold(cert, meta.Renewal); !h.Due {
			p.issue, p.held, p.reason = false, true, fmt.Sprintf("%s, but %s", p.reason, h.String())
		}
		return p
	}
	d := e.Decide(cert, v, meta.Renewal)
	if d.FetchARI {
		e.fetchARI(ctx, v, &meta.Renewal, e.log.With("cert", cert.Name))
		if err := e.saveMeta(ctx, cert.Name, meta); err != nil {
			p.err = fmt.Errorf("saving metadata: %w", err)
			return p
		}
		d = e.Decide(cert, v, meta.Renewal)
	}
	change := ""
	switch {
	case !sameNames(v.Info.Names, domains(cert)):
		change = fmt.Sprintf("names changed from %s", strings.Join(v.Info.Names, ","))
	case v.Info.KeyType != string(cert.KeyType):
		change = fmt.Sprintf("key type changed from %s", v.Info.KeyType)
	case v.Info.Profile != cert.Profile:
		change = fmt.Sprintf("profile changed from %q", v.Info.Profile)
	}
	switch h := e.hold(cert, meta.Renewal); {
	case change != "" && h.Due:
		p.issue, p.reason = true, change
	case change != "":
		p.held, p.reason = true, fmt.Sprintf("%s, but %s", change, h.String())
	case d.Due:
		p.issue, p.reason = true, d.Reason
	case meta.PendingDeploy:
		p.deploy, p.reason = true, "deploy pending from an earlier run"
	case !h.Due && d.At.Equal(h.At):
		p.held, p.reason = true, d.String()
	default:
		p.reason = d.String()
	}
	return p
}

// execute carries out p for cert and records the outcome in its metadata.
func (e *Engine) execute(ctx context.Context, cert *config.Certificate, p plan) Result {
	start := time.Now()
	log := e.log.With("cert", cert.Name)
	res := Result{Name: cert.Name, Action: ActionNone, Reason: p.reason}
	if p.current != nil {
		res.Version, res.Serial, res.NotAfter = p.current.ID, p.current.Info.Serial, p.current.Info.NotAfter
	}
	switch {
	case p.err != nil:
		res = e.failed(ctx, cert, p.meta, res, p.err, log)
	case p.issue:
		log.Info("obtaining certificate", "reason", p.reason, "names", domains(cert))
		res = e.obtain(ctx, cert, p.current, p.meta, res, log)
	case p.held:
		log.Warn("not ordering now", "reason", p.reason)
		res.Action = ActionHeld
	case p.deploy:
		log.Info("retrying deploy", "version", p.current.ID)
		res = e.redeploy(ctx, cert, p.current, p.meta, res, log)
	default:
		log.Info("certificate is current", "serial", res.Serial, "not_after", res.NotAfter, "renewal", p.reason)
	}
	res.Duration = time.Since(start)
	return res
}

// obtain orders a certificate for cert and deploys it, step by step:
// account, new order (RFC 8555 §7.4), authorizations solved concurrently
// (§7.5), key and CSR, finalize, download (preferred chain), store (the
// version becomes current once all its files are written), deploy (output
// copies, then the issued or renew event to the scripts). prev is the
// current version, if any; meta is updated and saved. A failure before the
// certificate is stored raises failed; a deploy failure after it keeps the
// certificate and marks the deploy pending.
func (e *Engine) obtain(ctx context.Context, cert *config.Certificate, prev *store.Version, meta *Meta, res Result, log *slog.Logger) Result {
	v, leaf, err := e.order(ctx, cert, prev, meta, log)
	if err != nil {
		return e.failed(ctx, cert, meta, res, err, log)
	}
	// The new certificate starts a fresh renewal state (the guard's orders
	// are kept); its renewal information is asked for at once, so the next
	// run knows its window without contacting the CA.
	meta.Renewal.RecordSuccess(e.now())
	if ctx.Err() == nil {
		e.fetchARI(ctx, v, &meta.Renewal, log)
	}
	// The certificate is in hand: it is stored even when the run is being
	// stopped (SIGTERM), so the order is not wasted. The version becomes
	// current in one step with its metadata, the deploy marked pending, so
	// a stop or a crash between storing and deploying still deploys it on
	// the next run, and no crash leaves the new state beside the old
	// certificate.
	sctx := context.WithoutCancel(ctx)
	meta.PendingDeploy = true
	if err := e.commit(sctx, cert.Name, v, meta); err != nil {
		return e.failed(ctx, cert, meta, res, fmt.Errorf("storing certificate: %w", err), log)
	}
	res.Action, res.Version, res.Serial, res.NotAfter = ActionIssued, v.ID, v.Info.Serial, v.Info.NotAfter
	name, prevSerial := event.Issued, ""
	if prev != nil {
		res.Action, name, prevSerial = ActionRenewed, event.Renew, prev.Info.Serial
	}
	log.Info("certificate stored", "version", v.ID, "serial", v.Info.Serial, "not_after", v.Info.NotAfter, "issuer", v.Info.Issuer)
	if err := ctx.Err(); err != nil {
		log.Warn("stopping before the deploy; it runs on the next start", "version", v.ID)
		res.Err = fmt.Errorf("%w: %w", ErrDeploy, err)
		return res
	}
	return e.deploy(ctx, cert, v, leaf, name, prevSerial, meta, res, log)
}

// order runs the protocol part of obtain and returns the unsaved version.
func (e *Engine) order(ctx context.Context, cert *config.Certificate, prev *store.Version, meta *Meta, log *slog.Logger) (*store.Version, *x509.Certificate, error) {
	acct, err := e.Account(ctx)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]acme.Identifier, len(cert.Identifiers))
	for i, id := range cert.Identifiers {
		ids[i] = acme.Identifier{Type: id.Type, Value: id.Value}
	}
	o, err := e.newOrder(ctx, cert, acct, acme.Order{Identifiers: ids, Profile: cert.Profile}, prev, meta, log)
	if err != nil {
		return nil, nil, err
	}
	log.Debug("order created", "order", o.URL, "authorizations", len(o.Authorizations))
	if err := e.authorize(ctx, cert, acct, o, log); err != nil {
		return nil, nil, err
	}
	key, reused, err := e.certKey(cert, prev)
	if err != nil {
		return nil, nil, err
	}
	csr, err := acme.NewCSR(key, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("making CSR: %w", err)
	}
	stop := e.progressLog(log, "waiting for issuance")
	o, err = e.client.FinalizeOrder(ctx, acct, o, csr)
	stop()
	if err != nil {
		return nil, nil, fmt.Errorf("finalizing order %s: %w", o.URL, err)
	}
	chain, err := e.client.FetchPreferredChain(ctx, acct, o.Certificate, cert.PreferredChain)
	if err != nil {
		return nil, nil, fmt.Errorf("downloading certificate %s: %w", o.Certificate, err)
	}
	if len(chain.Certificates) == 0 {
		return nil, nil, fmt.Errorf("downloading certificate %s: empty chain", o.Certificate)
	}
	leaf := chain.Certificates[0]
	if pk, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(key.Public()) {
		return nil, nil, fmt.Errorf("downloading certificate %s: it is not for the key of the CSR", o.Certificate)
	}
	keyPEM, err := marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	var chainPEM bytes.Buffer
	for _, c := range chain.Certificates[1:] {
		pem.Encode(&chainPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &store.Version{
		KeyPEM:   keyPEM,
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		ChainPEM: chainPEM.Bytes(),
		Info: store.VersionInfo{
			OrderURL:  o.URL,
			CertURL:   chain.URL,
			Serial:    leaf.SerialNumber.Text(16),
			Names:     domains(cert),
			KeyType:   string(cert.KeyType),
			Profile:   cert.Profile,
			Issuer:    leaf.Issuer.CommonName,
			NotBefore: leaf.NotBefore,
			NotAfter:  leaf.NotAfter,
			IssuedAt:  e.now(),
			ReusedKey: reused,
		},
	}, leaf, nil
}

// certKey returns the previous version's key when the certificate reuses
// keys and the type still matches, else a new key.
func (e *Engine) certKey(cert *config.Certificate, prev *store.Version) (crypto.Signer, bool, error) {
	if cert.ReuseKey && prev != nil && prev.KeyPEM != nil {
		if k, err := parseKeyPEM(prev.KeyPEM); err == nil && keyType(k.Public()) == cert.KeyType {
			return k, true, nil
		}
	}
	k, err := generateKey(cert.KeyType)
	return k, false, err
}

// deploy writes the output copies and raises name (issued or renew) to
// the scripts, then records the outcome: on failure the deploy is pending
// and the result's error wraps ErrDeploy.
func (e *Engine) deploy(ctx context.Context, cert *config.Certificate, v *store.Version, leaf *x509.Certificate, name event.Type, prevSerial string, meta *Meta, res Result, log *slog.Logger) Result {
	err := e.writeOutputs(cert, v)
	if err == nil {
		err = e.raise(ctx, cert, e.deployEvent(name, cert, v, leaf, prevSerial))
	}
	ev := MetaEvent{Time: e.now(), Name: string(name), Result: "ok", Version: v.ID}
	meta.PendingDeploy = err != nil
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrDeploy, err)
		ev.Result, ev.Detail = "error", err.Error()
		if ctx.Err() != nil {
			log.Warn("stopping: deploy interrupted; the certificate is kept and the next run deploys it", "version", v.ID, "error", err)
		} else {
			log.Error("deploy failed; the certificate is kept and the deploy will be retried on the next run", "version", v.ID, "error", err)
		}
		res.Err = err
	} else {
		log.Info("certificate deployed", "event", string(name), "version", v.ID)
	}
	meta.Events = append(meta.Events, ev)
	// Recorded even when the run is being stopped, so the pending deploy
	// and its event survive a SIGTERM during the scripts.
	if serr := e.saveMeta(context.WithoutCancel(ctx), cert.Name, meta); serr != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("saving metadata: %w", serr))
	}
	return res
}

// redeploy retries the pending deploy of the current version v without
// a new order: the event that failed (issued or renew) is raised again.
func (e *Engine) redeploy(ctx context.Context, cert *config.Certificate, v *store.Version, meta *Meta, res Result, log *slog.Logger) Result {
	// The previous version, if any, makes this a renew; an event recorded
	// for v says which one failed.
	name, prevSerial := event.Issued, ""
	if ids, err := e.store.Versions(ctx, cert.Name); err == nil && len(ids) > 1 {
		name = event.Renew
		if i := slices.Index(ids, v.ID); i > 0 {
			if pv, err := e.store.LoadVersion(ctx, cert.Name, ids[i-1]); err == nil {
				prevSerial = pv.Info.Serial
			}
		}
	}
	for i := len(meta.Events) - 1; i >= 0; i-- {
		ev := meta.Events[i]
		if ev.Version == v.ID && (ev.Name == string(event.Issued) || ev.Name == string(event.Renew)) {
			name = event.Type(ev.Name)
			break
		}
	}
	leaf, err := parseLeaf(v.CertPEM)
	if err != nil {
		return e.failed(ctx, cert, meta, res, err, log)
	}
	res = e.deploy(ctx, cert, v, leaf, name, prevSerial, meta, res, log)
	if res.Err == nil {
		res.Action = ActionDeployed
	}
	return res
}

// failed records err for cert, raises failed to its scripts and returns
// res marked failed. A run stopped from outside (SIGTERM) only abandons the
// order: that is not the certificate's failure, so nothing is raised or
// recorded and no backoff is earned.
func (e *Engine) failed(ctx context.Context, cert *config.Certificate, meta *Meta, res Result, err error, log *slog.Logger) Result {
	res.Action, res.Err = ActionFailed, err
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		log.Warn("stopping: order abandoned; the next run orders again", "error", err)
		return res
	}
	attrs := []any{"error", err}
	if p := problemOf(err); p != nil {
		attrs = append(attrs, "problem_type", p.Type, "problem_detail", p.Detail)
	}
	log.Error("certificate failed", attrs...)
	sctx := context.WithoutCancel(ctx)
	if serr := e.raise(sctx, cert, e.failedEvent(sctx, cert, err)); serr != nil {
		log.Warn("failed script failed", "error", serr)
	}
	if meta == nil {
		return res
	}
	e.recordFailure(meta, err)
	meta.Events = append(meta.Events, MetaEvent{Time: e.now(), Name: string(event.Failed), Result: "error", Detail: err.Error()})
	if serr := e.saveMeta(sctx, cert.Name, meta); serr != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("saving metadata: %w", serr))
	}
	return res
}

// writeOutputs writes the optional copies of v (config output.*), each
// atomically; the key with mode 0600, the rest 0644.
func (e *Engine) writeOutputs(cert *config.Certificate, v *store.Version) error {
	var errs []error
	for _, o := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{cert.Output.Cert, v.CertPEM, 0o644},
		{cert.Output.Chain, v.ChainPEM, 0o644},
		{cert.Output.Fullchain, v.Fullchain(), 0o644},
		{cert.Output.Key, v.KeyPEM, 0o600},
	} {
		if o.path == "" {
			continue
		}
		if err := store.WriteFileAtomic(o.path, o.data, o.mode); err != nil {
			errs = append(errs, fmt.Errorf("writing %s: %w", o.path, err))
		}
	}
	return errors.Join(errs...)
}

func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("parsing stored certificate: no CERTIFICATE PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing stored certificate: %w", err)
	}
	return c, nil
}
