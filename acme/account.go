package acme

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// ErrAccountDoesNotExist is matched (errors.Is) by the *AccountError of a
// request the server answered with accountDoesNotExist: FindAccount for
// a key without an account (RFC 8555 §7.3.1), or any request signed with
// an account URL the server does not know (then register again).
var ErrAccountDoesNotExist = errors.New("acme: account does not exist")

// ErrAccountKeyConflict is matched (errors.Is) by the *AccountError of a
// key change refused because the new key already belongs to an account
// (409 Conflict, RFC 8555 §7.3.5).
var ErrAccountKeyConflict = errors.New("acme: the key belongs to another account")

// AccountError is a refusal about the account itself: the server knows no
// such account, or a key change conflicts with another account. Use
// errors.Is with ErrAccountDoesNotExist or ErrAccountKeyConflict.
type AccountError struct {
	// URL is the account the request was signed for, "" when it was
	// signed with a bare key (newAccount, onlyReturnExisting).
	URL string
	// ConflictURL is the account that already holds the key, from the
	// Location of a 409 answer to keyChange ("" if not sent).
	ConflictURL string
	// Problem is the server's answer.
	Problem *Problem
}

// Error says which account and what the server answered.
func (e *AccountError) Error() string {
	switch {
	case e.conflict() && e.ConflictURL != "":
		return fmt.Sprintf("acme: the new key already belongs to account %s: %s", e.ConflictURL, problemText(e.Problem))
	case e.conflict():
		return "acme: the new key already belongs to another account: " + problemText(e.Problem)
	case e.URL != "":
		return fmt.Sprintf("acme: account %s does not exist: %s", e.URL, problemText(e.Problem))
	}
	return "acme: no account for the key: " + problemText(e.Problem)
}

func (e *AccountError) conflict() bool {
	return e.ConflictURL != "" || e.Problem != nil && e.Problem.Status == http.StatusConflict
}

// Is matches ErrAccountKeyConflict or ErrAccountDoesNotExist.
func (e *AccountError) Is(target error) bool {
	switch target {
	case ErrAccountKeyConflict:
		return e.conflict()
	case ErrAccountDoesNotExist:
		return e.Problem != nil && e.Problem.Type == ProblemAccountDoesNotExist
	}
	return false
}

// Unwrap returns the server's problem.
func (e *AccountError) Unwrap() error { return e.Problem }

// ExternalAccountBinding binds a new account to an account the CA knows
// by other means, RFC 8555 §7.3.4. Key is the raw MAC key (CAs usually
// hand it out base64url-encoded: decode it first).
type ExternalAccountBinding struct {
	KeyID string
	Key   []byte
	// Algorithm is HS256 (the default when empty), HS384 or HS512.
	Algorithm string
}

// String redacts the MAC key.
func (e ExternalAccountBinding) String() string {
	return fmt.Sprintf("EAB{KeyID: %s, Algorithm: %s, Key: REDACTED}", e.KeyID, e.Algorithm)
}

// LogValue redacts the MAC key.
func (e ExternalAccountBinding) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", e.KeyID), slog.String("algorithm", e.Algorithm))
}

// NewAccount creates an account for acct.Key with acct.Contact and
// acct.TermsOfServiceAgreed, RFC 8555 §7.3, bound to eab when it is not
// nil (§7.3.4). If the key already has an account the server returns it.
// The returned account carries the key and its URL.
func (c *Client) NewAccount(ctx context.Context, acct Account, eab *ExternalAccountBinding) (Account, error) {
	if acct.Key == nil {
		return Account{}, ErrNoAccount
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return Account{}, err
	}
	req := struct {
		Contact                []string        `json:"contact,omitempty"`
		TermsOfServiceAgreed   bool            `json:"termsOfServiceAgreed,omitempty"`
		ExternalAccountBinding json.RawMessage `json:"externalAccountBinding,omitempty"`
	}{Contact: acct.Contact, TermsOfServiceAgreed: acct.TermsOfServiceAgreed}
	if eab != nil {
		if req.ExternalAccountBinding, err = signEAB(eab, acct.Key, dir.NewAccount); err != nil {
			return Account{}, fmt.Errorf("creating account: %w", err)
		}
	}
	return c.accountRequest(ctx, "creating account", signer{key: acct.Key}, dir.NewAccount, req, acct.Key)
}

// FindAccount looks up the account of key without creating one
// (onlyReturnExisting, RFC 8555 §7.3.1). When there is none it returns an
// *AccountError matching ErrAccountDoesNotExist.
func (c *Client) FindAccount(ctx context.Context, key crypto.Signer) (Account, error) {
	dir, err := c.Directory(ctx)
	if err != nil {
		return Account{}, err
	}
	req := struct {
		OnlyReturnExisting bool `json:"onlyReturnExisting"`
	}{true}
	return c.accountRequest(ctx, "finding account", signer{key: key}, dir.NewAccount, req, key)
}

// GetAccount fetches the account's current state (POST-as-GET, RFC 8555
// §7.3.3).
func (c *Client) GetAccount(ctx context.Context, acct Account) (Account, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Account{}, err
	}
	return c.accountRequest(ctx, "fetching account", s, acct.URL, nil, acct.Key)
}

// UpdateAccount replaces the account's contacts with acct.Contact, RFC
// 8555 §7.3.2. An empty list removes them all.
func (c *Client) UpdateAccount(ctx context.Context, acct Account) (Account, error) {
	return c.postAccount(ctx, "updating account", acct, false)
}

// AgreeToTerms tells the server that the account's holder agrees to its
// current terms of service (termsOfServiceAgreed in an account update),
// as RFC 8555 §7.3.3 has a client do after the terms changed. The update
// carries acct.Contact too, unchanged: a server may refuse an update that
// changes nothing it keeps (Pebble does), so pass the account's current
// contacts.
func (c *Client) AgreeToTerms(ctx context.Context, acct Account) (Account, error) {
	return c.postAccount(ctx, "agreeing to the terms of service", acct, true)
}

// postAccount sends an account update with acct.Contact (an empty list
// when nil: every contact removed) and, when agree is set,
// termsOfServiceAgreed.
func (c *Client) postAccount(ctx context.Context, what string, acct Account, agree bool) (Account, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Account{}, err
	}
	contact := acct.Contact
	if contact == nil {
		contact = []string{}
	}
	req := struct {
		Contact              []string `json:"contact"`
		TermsOfServiceAgreed bool     `json:"termsOfServiceAgreed,omitempty"`
	}{contact, agree}
	return c.accountRequest(ctx, what, s, acct.URL, req, acct.Key)
}

// DeactivateAccount deactivates the account, RFC 8555 §7.3.6. The server
// refuses every later request signed by it.
func (c *Client) DeactivateAccount(ctx context.Context, acct Account) (Account, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Account{}, err
	}
	req := struct {
		Status string `json:"status"`
	}{StatusDeactivated}
	return c.accountRequest(ctx, "deactivating account", s, acct.URL, req, acct.Key)
}

// ChangeAccountKey replaces the account's key with newKey (key rollover,
// RFC 8555 §7.3.5) and returns the account with the new key. When newKey
// already belongs to an account the error is an *AccountError matching
// ErrAccountKeyConflict, naming that account.
func (c *Client) ChangeAccountKey(ctx context.Context, acct Account, newKey crypto.Signer) (Account, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Account{}, err
	}
	if newKey == nil {
		return Account{}, errors.New("acme: changing account key: no new key")
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return Account{}, err
	}
	if dir.KeyChange == "" {
		return Account{}, fmt.Errorf("changing account key: %w: no keyChange", ErrNotSupported)
	}
	oldJWK := publicJWK(acct.Key)
	inner, err := json.Marshal(struct {
		Account string `json:"account"`
		OldKey  any    `json:"oldKey"`
	}{acct.URL, &oldJWK})
	if err != nil {
		return Account{}, fmt.Errorf("encoding key change: %w", err)
	}
	innerJWS, err := signJWS(newKey, "", "", dir.KeyChange, inner)
	if err != nil {
		return Account{}, fmt.Errorf("changing account key: %w", err)
	}
	r, err := c.post(ctx, s, dir.KeyChange, json.RawMessage(innerJWS), "", false)
	var p *Problem
	if errors.As(err, &p) && p.Status == http.StatusConflict {
		err = &AccountError{URL: acct.URL, ConflictURL: r.location, Problem: p}
	}
	if err != nil {
		return Account{}, fmt.Errorf("changing account key: %w", err)
	}
	acct.Key = newKey
	return acct, nil
}

func (c *Client) accountRequest(ctx context.Context, doing string, s signer, u string, req any, key crypto.Signer) (Account, error) {
	var a Account
	// newAccount (creating or finding) rides out transient refusals.
	r, err := c.postJSON(ctx, s, u, req, &a, s.kid == "")
	if err != nil {
		return Account{}, fmt.Errorf("%s: %w", doing, err)
	}
	a.Key = key
	a.URL = r.location
	if a.URL == "" {
		a.URL = s.kid
	}
	if a.URL == "" {
		return Account{}, fmt.Errorf("%s: %w: no account Location", doing, ErrMalformedResponse)
	}
	return a, nil
}
