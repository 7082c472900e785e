package acme

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// GetAuthorization fetches an authorization (POST-as-GET, RFC 8555 §7.5).
func (c *Client) GetAuthorization(ctx context.Context, acct Account, url string) (Authorization, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Authorization{}, err
	}
	a, err := c.authzRequest(ctx, s, url, nil, true)
	if err != nil {
		return Authorization{}, fmt.Errorf("fetching authorization %s: %w", url, err)
	}
	return a, nil
}

// WaitAuthorization polls the authorization until it is no longer pending,
// RFC 8555 §7.5.1, with the backoff, Retry-After handling and bounds of
// WaitOrder. A valid authorization is returned with a nil error; an
// invalid one with a *ValidationError carrying the challenges' problems;
// another final status (deactivated, expired, revoked) with an error
// naming it; a wait that ran out of time with a *PollError.
func (c *Client) WaitAuthorization(ctx context.Context, acct Account, url string) (Authorization, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Authorization{}, err
	}
	a := Authorization{URL: url}
	t := pollTarget{kind: "authorization", url: url}
	err = c.poll(ctx, t, 0, func(ctx context.Context) (string, time.Duration, bool, error) {
		got, err := c.authzRequest(ctx, s, url, nil, true)
		if err != nil {
			return "", 0, false, fmt.Errorf("polling authorization %s: %w", url, err)
		}
		a = got
		switch a.Status {
		case StatusValid:
			return a.Status, 0, true, nil
		case StatusPending:
			return a.Status, a.RetryAfter, false, nil
		case StatusInvalid:
			return a.Status, 0, true, &ValidationError{Authorizations: []Authorization{a}}
		}
		return a.Status, 0, true, fmt.Errorf("authorization %s for %s is %s", url, authzIdentifier(a), a.Status)
	})
	var pe *PollError
	if errors.As(err, &pe) && a.Identifier.Value != "" {
		pe.Identifier = authzIdentifier(a)
	}
	return a, err
}

// DeactivateAuthorization deactivates an authorization, RFC 8555 §7.5.2.
func (c *Client) DeactivateAuthorization(ctx context.Context, acct Account, url string) (Authorization, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Authorization{}, err
	}
	req := struct {
		Status string `json:"status"`
	}{StatusDeactivated}
	a, err := c.authzRequest(ctx, s, url, req, true)
	if err != nil {
		return Authorization{}, fmt.Errorf("deactivating authorization %s: %w", url, err)
	}
	return a, nil
}

// NewAuthorization pre-authorizes an identifier (newAuthz, RFC 8555
// §7.4.1). It returns an error wrapping ErrNotSupported when the directory
// has no newAuthz (Let's Encrypt and Pebble have none).
func (c *Client) NewAuthorization(ctx context.Context, acct Account, id Identifier) (Authorization, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Authorization{}, err
	}
	dir, err := c.Directory(ctx)
	if err != nil {
		return Authorization{}, err
	}
	if dir.NewAuthz == "" {
		return Authorization{}, fmt.Errorf("pre-authorizing %s: %w: no newAuthz", id, ErrNotSupported)
	}
	req := struct {
		Identifier Identifier `json:"identifier"`
	}{id}
	a, err := c.authzRequest(ctx, s, dir.NewAuthz, req, false)
	if err != nil {
		return Authorization{}, fmt.Errorf("pre-authorizing %s: %w", id, err)
	}
	if a.URL == "" {
		return Authorization{}, fmt.Errorf("pre-authorizing %s: %w: no authorization Location", id, ErrMalformedResponse)
	}
	return a, nil
}

// AcceptChallenge tells the server the challenge is ready to be
// validated, RFC 8555 §7.5.1. It refuses a challenge whose token is not
// valid base64url (ErrInvalidToken) before sending anything. Poll the
// authorization (WaitAuthorization) or the order (WaitOrder) afterwards.
func (c *Client) AcceptChallenge(ctx context.Context, acct Account, ch Challenge) (Challenge, error) {
	s, err := accountSigner(acct)
	if err != nil {
		return Challenge{}, err
	}
	if ch.Recognized() {
		if err := ValidateToken(ch.Token); err != nil {
			return Challenge{}, fmt.Errorf("accepting %s challenge: %w", ch.Type, err)
		}
	}
	var out Challenge
	if _, err := c.postJSON(ctx, s, ch.URL, struct{}{}, &out, true); err != nil {
		return Challenge{}, fmt.Errorf("accepting %s challenge %s: %w", ch.Type, ch.URL, err)
	}
	return out, nil
}

// authzRequest posts to url; the authorization's URL is the Location, or
// url itself when isAuthzURL.
func (c *Client) authzRequest(ctx context.Context, s signer, url string, req any, isAuthzURL bool) (Authorization, error) {
	var a Authorization
	r, err := c.postJSON(ctx, s, url, req, &a, false)
	if err != nil {
		return Authorization{}, err
	}
	a.URL = r.location
	if a.URL == "" && isAuthzURL {
		a.URL = url
	}
	a.RetryAfter = r.retryAfter
	return a, nil
}
