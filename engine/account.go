package engine

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/acmehook/acmehook/acme"
	"github.com/acmehook/acmehook/engine/store"
)

// Account returns the ACME account for the configured CA. A stored account
// (its key and URL) is used as it is: requests are signed with its URL as
// "kid" at once (RFC 8555 §6.2), without asking the CA again; when the CA
// answers that it does not know it (a CA that was reset), the caller asks
// reregister. With no account stored, a key is made and stored before the
// CA hears of it (so a crash never loses a key the CA knows), then
// registered with newAccount (§7.3), bound to the external account when
// ca.eab_kid is set (§7.3.4); a key stored by a run that crashed before
// recording the URL is registered the same way (newAccount returns the
// existing account of a key the CA knows). The account is cached for the
// Engine's lifetime.
func (e *Engine) Account(ctx context.Context) (acme.Account, error) {
	e.acctMu.Lock()
	defer e.acctMu.Unlock()
	if e.acct != nil {
		return *e.acct, nil
	}
	key, info, err := e.accountKey(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	if info.URL != "" {
		e.acct = &acme.Account{Key: key, URL: info.URL, Contact: info.Contact, TermsOfServiceAgreed: info.TermsOfServiceAgreed}
		return *e.acct, nil
	}
	return e.register(ctx, key, info)
}

// withAccount runs f with the account and, when the CA refuses it, once
// more: with the stored account if it changed meanwhile (another process
// rolled the key over: reload), else, when the CA answers that it does not
// know the account, after registering it again. It returns the account f
// last ran with.
func (e *Engine) withAccount(ctx context.Context, f func(acme.Account) error) (acme.Account, error) {
	acct, err := e.Account(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	err = f(acct)
	if err == nil {
		return acct, nil
	}
	if stored, ok := e.reload(ctx, acct, err); ok {
		return stored, f(stored)
	}
	if !errors.Is(err, acme.ErrAccountDoesNotExist) {
		return acct, err
	}
	if acct, err = e.reregister(ctx, acct, err); err != nil {
		return acme.Account{}, err
	}
	return acct, f(acct)
}

// reload returns the stored account, and true, when the CA refused a
// request signed with acct (err) and the stored account is not acct:
// `acmehook account rollover` on another node of a fleet (or beside it)
// changed the key, or another node registered the account again. The
// engine uses the stored one from then on. It costs one store read, on
// that error path only; the CA is not asked. A rollover that is still
// pending is left alone: it is the business of the process doing it (or,
// after a crash, of the next start: resolveRollover).
func (e *Engine) reload(ctx context.Context, acct acme.Account, err error) (acme.Account, bool) {
	if !keyRefused(err) {
		return acme.Account{}, false
	}
	e.acctMu.Lock()
	defer e.acctMu.Unlock()
	if e.acct != nil && !sameAccount(*e.acct, acct) {
		return *e.acct, true // another certificate's job reloaded it meanwhile
	}
	a, lerr := e.store.LoadAccount(ctx, e.cfg.CA.Directory)
	if lerr != nil {
		e.log.Warn("the CA refused the account; reading the stored one again", "account", acct.URL, "error", lerr)
		return acme.Account{}, false
	}
	key, kerr := parseKeyPEM(a.KeyPEM)
	if kerr != nil || a.Info.URL == "" {
		return acme.Account{}, false
	}
	stored := acme.Account{Key: key, URL: a.Info.URL, Contact: a.Info.Contact, TermsOfServiceAgreed: a.Info.TermsOfServiceAgreed}
	if sameAccount(stored, acct) {
		return acme.Account{}, false
	}
	e.log.Info("the stored account changed (a key rollover or a registration by another process); using it", "account", stored.URL, "previous", acct.URL)
	e.acct = &stored
	return stored, true
}

// keyRefused reports whether err is a refusal of the CA that a changed
// account key or URL explains: the signature does not verify with the
// account's key (malformed, as Pebble and Boulder answer a key rolled
// over), unauthorized, or accountDoesNotExist.
func keyRefused(err error) bool {
	var p *acme.Problem
	if !errors.As(err, &p) {
		return false
	}
	switch p.Type {
	case acme.ProblemMalformed, acme.ProblemUnauthorized, acme.ProblemAccountDoesNotExist:
		return true
	}
	return false
}

// sameAccount reports whether a and b are the same account URL with the
// same key.
func sameAccount(a, b acme.Account) bool {
	if a.URL != b.URL || a.Key == nil || b.Key == nil {
		return false
	}
	pub, ok := a.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(b.Key.Public())
}

// lockAccount returns the store to write the account info through while
// reading, deciding on and writing it, and the function that ends that.
// In a fleet (a coordinator) it takes the account's lock, without waiting,
// and the returned store's writes are fenced by it: another node holding
// it fails this with an error wrapping store.ErrLocked. Without a
// coordinator the storage lock already keeps other processes out.
func (e *Engine) lockAccount(ctx context.Context) (*store.Store, func(), error) {
	if e.coord == nil {
		return e.store, func() {}, nil
	}
	l, err := e.store.Backend().Lock(ctx, AccountLock(e.cfg.CA.Directory))
	if err != nil {
		return nil, nil, err
	}
	return e.store.WithFence(l), func() {
		if err := l.Unlock(context.WithoutCancel(ctx)); err != nil {
			e.log.Warn("releasing the account's lock", "error", err)
		}
	}, nil
}

// AccountLockWait bounds how long `acmehook account update` and `account
// rollover` wait, in a fleet, for the account's lock (waitAccountLock):
// another node holds it while it looks at the CA's terms (one directory
// fetch) or runs one of these commands.
const AccountLockWait = 10 * time.Second

// waitAccountLock is lockAccount, waiting up to AccountLockWait (polling
// every 100 ms) while another node holds the lock.
func (e *Engine) waitAccountLock(ctx context.Context) (*store.Store, func(), error) {
	deadline := time.Now().Add(AccountLockWait)
	for logged := false; ; logged = true {
		st, unlock, err := e.lockAccount(ctx)
		if !errors.Is(err, store.ErrLocked) {
			return st, unlock, err
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("taking the account's lock (waited %s): %w", AccountLockWait, err)
		}
		if !logged {
			e.log.Info("waiting for the account's lock", "lock", AccountLock(e.cfg.CA.Directory), "reason", err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("taking the account's lock: %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AccountLock is the name of the storage lock of the account for the CA
// directory URL, which a fleet node holds while it looks at the CA's terms
// of service for it (checkTerms), or updates or rolls over the account.
func AccountLock(directory string) string {
	return "accounts/" + store.AccountDirName(directory)
}

// reregister registers the stored account key again after the CA answered
// a request signed with acct with accountDoesNotExist (err), and returns
// the account to retry with. Any other error is returned as it is.
func (e *Engine) reregister(ctx context.Context, acct acme.Account, err error) (acme.Account, error) {
	if !errors.Is(err, acme.ErrAccountDoesNotExist) {
		return acme.Account{}, err
	}
	e.acctMu.Lock()
	defer e.acctMu.Unlock()
	if e.acct != nil && e.acct.URL != acct.URL {
		return *e.acct, nil // another certificate registered it meanwhile
	}
	key, info, kerr := e.accountKey(ctx)
	if kerr != nil {
		return acme.Account{}, errors.Join(err, kerr)
	}
	return e.register(ctx, key, info)
}

// register registers key with newAccount, records the account's URL and
// caches it. e.acctMu is held.
func (e *Engine) register(ctx context.Context, key crypto.Signer, info store.AccountInfo) (acme.Account, error) {
	dir, err := e.client.Directory(ctx)
	if err != nil {
		return acme.Account{}, err // it says "fetching directory: GET <url>"
	}
	if dir.Meta.TermsOfService != "" && !e.cfg.CA.AgreeTOS {
		return acme.Account{}, fmt.Errorf("%w: %s", ErrTermsOfService, dir.Meta.TermsOfService)
	}
	eab, err := e.eab()
	if err != nil {
		return acme.Account{}, err
	}
	acct, err := e.client.NewAccount(ctx, acme.Account{
		Key:                  key,
		Contact:              e.cfg.CA.Contact(),
		TermsOfServiceAgreed: e.cfg.CA.AgreeTOS,
	}, eab)
	if err != nil {
		return acme.Account{}, fmt.Errorf("registering account at %s: %w", e.cfg.CA.Directory, err)
	}
	if acct.URL != info.URL {
		if info.URL != "" {
			e.log.Warn("the CA did not know the stored account; registered it again", "old", info.URL, "account", acct.URL)
		} else {
			e.log.Info("account registered", "account", acct.URL, "directory", e.cfg.CA.Directory)
		}
		now := e.now()
		info.URL = acct.URL
		info.Contact = acct.Contact
		info.KeyType = string(keyType(key.Public()))
		info.TermsOfServiceAgreed = e.cfg.CA.AgreeTOS
		// The terms agreed to, which checkTerms compares the directory with.
		info.TermsOfService, info.TermsAnnounced, info.TermsCheckedAt = dir.Meta.TermsOfService, "", now
		info.EABKeyID = e.cfg.CA.EABKeyID
		if info.CreatedAt.IsZero() {
			info.CreatedAt = now
		}
		info.UpdatedAt = now
		if err := e.store.SaveAccountInfo(ctx, e.cfg.CA.Directory, info); err != nil {
			return acme.Account{}, fmt.Errorf("saving account: %w", err)
		}
	}
	e.acct = &acct
	return acct, nil
}

// accountKey loads the stored account key, or makes and stores a new one.
func (e *Engine) accountKey(ctx context.Context) (crypto.Signer, store.AccountInfo, error) {
	a, err := e.store.LoadAccount(ctx, e.cfg.CA.Directory)
	if errors.Is(err, store.ErrNotFound) {
		key, gerr := generateKey(e.cfg.CA.AccountKeyType)
		if gerr != nil {
			return nil, store.AccountInfo{}, gerr
		}
		pemKey, gerr := marshalKeyPEM(key)
		if gerr != nil {
			return nil, store.AccountInfo{}, gerr
		}
		err = e.store.CreateAccountKey(ctx, e.cfg.CA.Directory, pemKey)
		if err == nil {
			return key, store.AccountInfo{}, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, store.AccountInfo{}, fmt.Errorf("storing account key: %w", err)
		}
		a, err = e.store.LoadAccount(ctx, e.cfg.CA.Directory)
	}
	if err == nil && a.PendingKeyPEM != nil {
		a, err = e.resolveRollover(ctx, a)
	}
	if err != nil {
		return nil, store.AccountInfo{}, fmt.Errorf("loading account: %w", err)
	}
	key, err := parseKeyPEM(a.KeyPEM)
	if err != nil {
		return nil, store.AccountInfo{}, fmt.Errorf("loading account key: %w", err)
	}
	return key, a.Info, nil
}

// resolveRollover finishes or undoes an account key rollover that a crash
// or a lost answer interrupted: the CA is asked whether it knows the
// pending key (onlyReturnExisting, RFC 8555 §7.3.1). If it does, the
// rollover went through and is finished; if not, it is undone. Either way
// the account stays the one the CA knows: a second account is never
// registered with the pending key.
func (e *Engine) resolveRollover(ctx context.Context, a *store.Account) (*store.Account, error) {
	dir := e.cfg.CA.Directory
	pending, err := parseKeyPEM(a.PendingKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("reading the pending account key of an interrupted rollover: %w", err)
	}
	found, err := e.client.FindAccount(ctx, pending)
	switch {
	case err == nil:
		if err := e.store.FinishRollover(ctx, dir); err != nil {
			return nil, err
		}
		e.log.Warn("finished an interrupted account key rollover: the CA knows the new key", "account", found.URL)
	case errors.Is(err, acme.ErrAccountDoesNotExist):
		if err := e.store.AbortRollover(ctx, dir); err != nil {
			return nil, err
		}
		e.log.Warn("undid an interrupted account key rollover: the CA does not know the new key; the old one stays", "directory", dir)
	default:
		return nil, fmt.Errorf("resolving an interrupted account key rollover: %w", err)
	}
	return e.store.LoadAccount(ctx, dir)
}

// eab returns the external account binding of the configuration, or nil.
// The HMAC key is read here, when an account is created, and nowhere else
// (config.EABKey): a stored account never needs it.
func (e *Engine) eab() (*acme.ExternalAccountBinding, error) {
	ca := e.cfg.CA
	if ca.EABKeyID == "" {
		return nil, nil // a CA that requires it answers externalAccountRequired
	}
	key, err := e.cfg.EABKey()
	if err != nil {
		return nil, err
	}
	return &acme.ExternalAccountBinding{KeyID: ca.EABKeyID, Key: key, Algorithm: ca.EABAlgorithm}, nil
}

// AccountInfo is what `acmehook account show` prints.
type AccountInfo struct {
	Directory string
	Stored    store.AccountInfo
	// Remote is the account as the CA reports it.
	Remote acme.Account
}

// ShowAccount looks up the stored account at the CA without creating it
// (RFC 8555 §7.3.1).
func (e *Engine) ShowAccount(ctx context.Context) (AccountInfo, error) {
	a, err := e.store.LoadAccount(ctx, e.cfg.CA.Directory)
	if errors.Is(err, store.ErrNotFound) {
		return AccountInfo{}, fmt.Errorf("no account stored for %s yet (acmehook run creates it): %w", e.cfg.CA.Directory, err)
	}
	if err != nil {
		return AccountInfo{}, fmt.Errorf("loading account: %w", err)
	}
	key, err := parseKeyPEM(a.KeyPEM)
	if err != nil {
		return AccountInfo{}, fmt.Errorf("loading account key: %w", err)
	}
	remote, err := e.client.FindAccount(ctx, key)
	if err != nil {
		return AccountInfo{Directory: e.cfg.CA.Directory, Stored: a.Info}, fmt.Errorf("looking up account: %w", err)
	}
	return AccountInfo{Directory: e.cfg.CA.Directory, Stored: a.Info, Remote: remote}, nil
}

// UpdateAccount sets the account's contacts to ca.email (RFC 8555 §7.3.2).
// In a fleet it works under the account's lock (waitAccountLock), so the
// account info it writes is not a copy another node's look at the CA's
// terms is writing meanwhile.
func (e *Engine) UpdateAccount(ctx context.Context) (acme.Account, error) {
	st, unlock, err := e.waitAccountLock(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	defer unlock()
	var up acme.Account
	acct, err := e.withAccount(ctx, func(acct acme.Account) (err error) {
		acct.Contact = e.cfg.CA.Contact()
		up, err = e.client.UpdateAccount(ctx, acct)
		return err
	})
	if err != nil {
		return acme.Account{}, fmt.Errorf("updating account %s: %w", acct.URL, err)
	}
	a, err := st.LoadAccount(ctx, e.cfg.CA.Directory)
	if err != nil {
		return up, fmt.Errorf("loading account: %w", err)
	}
	a.Info.Contact = up.Contact
	a.Info.UpdatedAt = e.now()
	if err := st.SaveAccountInfo(ctx, e.cfg.CA.Directory, a.Info); err != nil {
		return up, fmt.Errorf("saving account: %w", err)
	}
	return up, nil
}

// RolloverAccount replaces the account key with a new one of
// ca.account_key_type (RFC 8555 §7.3.5). The new key is stored first (the
// old one is kept beside it); if the CA refuses the change or offers no
// keyChange, the new key, which it never registered, is dropped and the
// old one stays. In a fleet it works under the account's lock
// (waitAccountLock), as UpdateAccount does.
func (e *Engine) RolloverAccount(ctx context.Context) (acme.Account, error) {
	st, unlock, err := e.waitAccountLock(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	defer unlock()
	acct, err := e.Account(ctx)
	if err != nil {
		return acme.Account{}, err
	}
	old, err := st.LoadAccount(ctx, e.cfg.CA.Directory)
	if err != nil {
		return acme.Account{}, fmt.Errorf("loading account: %w", err)
	}
	newKey, err := generateKey(e.cfg.CA.AccountKeyType)
	if err != nil {
		return acme.Account{}, err
	}
	newPEM, err := marshalKeyPEM(newKey)
	if err != nil {
		return acme.Account{}, err
	}
	if err := st.BeginRollover(ctx, e.cfg.CA.Directory, newPEM); err != nil {
		return acme.Account{}, fmt.Errorf("storing new account key: %w", err)
	}
	// The client's errors say "changing account key" already.
	rolled, err := e.client.ChangeAccountKey(ctx, acct, newKey)
	if err != nil {
		var p *acme.Problem
		if !errors.As(err, &p) && !errors.Is(err, acme.ErrNotSupported) {
			// No answer: the CA may have changed the key. The next
			// start asks it which key it knows (resolveRollover).
			return acme.Account{}, fmt.Errorf("%w (the new key is kept as pending; the next run asks the CA which key it knows)", err)
		}
		// Refused, or the CA has no keyChange: the new key was never
		// registered and is dropped.
		if rerr := st.AbortRollover(context.WithoutCancel(ctx), e.cfg.CA.Directory); rerr != nil {
			return acme.Account{}, fmt.Errorf("%w (and undoing the rollover: %v)", err, rerr)
		}
		return acme.Account{}, err
	}
	if err := st.FinishRollover(context.WithoutCancel(ctx), e.cfg.CA.Directory); err != nil {
		return rolled, fmt.Errorf("the CA changed the account key, but storing it: %w (the next run finishes it)", err)
	}
	old.Info.KeyType = string(keyType(newKey.Public()))
	old.Info.UpdatedAt = e.now()
	if err := st.SaveAccountInfo(ctx, e.cfg.CA.Directory, old.Info); err != nil {
		return rolled, fmt.Errorf("saving account: %w", err)
	}
	e.acctMu.Lock()
	e.acct = &rolled
	e.acctMu.Unlock()
	return rolled, nil
}

// DeactivateAccount deactivates the account at the CA (RFC 8555 §7.3.6).
// The CA refuses any further request signed with its key.
func (e *Engine) DeactivateAccount(ctx context.Context) (acme.Account, error) {
	var out acme.Account
	acct, err := e.withAccount(ctx, func(acct acme.Account) (err error) {
		out, err = e.client.DeactivateAccount(ctx, acct)
		return err
	})
	if err != nil {
		return acme.Account{}, fmt.Errorf("deactivating account %s: %w", acct.URL, err)
	}
	return out, nil
}
