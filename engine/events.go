package engine

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/luahost"
	"github.com/acmehook/acmehook/engine/store"
	"github.com/acmehook/acmehook/plugin/sdk"
)

// dispatch raises ev to every script of cert, each under the certificate's
// script_timeout. A pre-event (challenge-provision) stops at the first
// failure, which is the script's veto; post-events run every script and
// return every failure joined.
func (e *Engine) dispatch(ctx context.Context, cert *config.Certificate, ev luahost.Event) error {
	var errs []error
	for _, script := range cert.Scripts {
		sctx, cancel := context.WithTimeout(ctx, cert.ScriptTimeout.Duration)
		err := e.scripts.Dispatch(sctx, script, ev)
		cancel()
		if err == nil {
			continue
		}
		err = fmt.Errorf("running %s script %w", ev.Name, err)
		if ev.Name.Pre() {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fileStore is implemented by stores whose versions are files that scripts
// can read (store.FileStore).
type fileStore interface {
	Files(name, id string) (store.VersionFiles, error)
}

// versionFiles returns the files of version id of name, or empty paths for
// a store that keeps no files.
func (e *Engine) versionFiles(name, id string) store.VersionFiles {
	fst, ok := e.store.(fileStore)
	if !ok {
		return store.VersionFiles{}
	}
	f, err := fst.Files(name, id)
	if err != nil {
		return store.VersionFiles{}
	}
	return f
}

// certEvent builds issued, renew or revoke data for version v of cert.
func (e *Engine) certEvent(name luahost.EventName, cert *config.Certificate, v *store.Version, leaf *x509.Certificate, previousSerial string) luahost.Event {
	ev := luahost.Event{
		Name:           name,
		CertName:       cert.Name,
		Domains:        domains(cert),
		CertPEM:        string(v.CertPEM),
		ChainPEM:       string(v.ChainPEM),
		FullchainPEM:   string(v.Fullchain()),
		Serial:         v.Info.Serial,
		NotBefore:      v.Info.NotBefore,
		NotAfter:       v.Info.NotAfter,
		Profile:        v.Info.Profile,
		PreviousSerial: previousSerial,
	}
	if leaf != nil {
		ev.Issuer = leaf.Issuer.String()
	}
	f := e.versionFiles(cert.Name, v.ID)
	ev.CertPath, ev.KeyPath, ev.ChainPath, ev.FullchainPath = f.Cert, f.Key, f.Chain, f.Fullchain
	return ev
}

// failedEvent builds the failed event for err: its text, and the ACME
// problem type and detail when the CA reported one (RFC 8555 §6.7). When
// a certificate is current (a renewal failed), the event describes it too,
// so an alert can say how long the certificate in service has left.
func (e *Engine) failedEvent(ctx context.Context, cert *config.Certificate, err error) luahost.Event {
	ev := luahost.Event{Name: luahost.Failed, CertName: cert.Name, Domains: domains(cert)}
	cur, lerr := e.store.LoadCertificate(ctx, cert.Name)
	if cur != nil && (lerr == nil || errors.Is(lerr, store.ErrKeyMovedAside)) {
		if leaf, perr := parseLeaf(cur.CertPEM); perr == nil {
			ev = e.certEvent(luahost.Failed, cert, cur, leaf, "")
			if lerr != nil {
				ev.KeyPath = "" // moved aside after a keyCompromise revocation
			}
		}
	}
	ev.Error = &luahost.EventError{Message: err.Error()}
	if p := problemOf(err); p != nil {
		ev.Error.ProblemType, ev.Error.ProblemDetail = p.Type, p.Detail
	}
	return ev
}

// challengeEvent builds challenge-provision or challenge-cleanup data.
func challengeEvent(name luahost.EventName, cert *config.Certificate, ch sdk.Challenge) luahost.Event {
	id := ch.Identifier.Value
	if ch.Identifier.Wildcard {
		id = "*." + id
	}
	return luahost.Event{
		Name:     name,
		CertName: cert.Name,
		Domains:  domains(cert),
		Challenge: &luahost.Challenge{
			Type:             ch.Type,
			Identifier:       id,
			Token:            ch.Token,
			KeyAuthorization: ch.KeyAuthorization,
			DNSName:          ch.DNS01RecordName,
			DNSValue:         ch.DNS01RecordValue,
		},
	}
}

// problemOf returns the ACME problem in err's chain, or nil.
func problemOf(err error) *acme.Problem {
	var p *acme.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

func domains(cert *config.Certificate) []string {
	out := make([]string, len(cert.Identifiers))
	for i, id := range cert.Identifiers {
		out[i] = id.Value
	}
	return out
}
