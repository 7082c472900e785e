// Package acme is an ACME client library (RFC 8555) with the extensions a
// modern client needs: IP identifiers (RFC 8738), tls-alpn-01 (RFC 8737),
// renewal information and order replacement (ARI, RFC 9773), certificate
// profiles (draft-ietf-acme-profiles) and External Account Binding.
//
// It imports only the standard library, go-jose and golang.org/x, and
// holds no package-level mutable state.
//
// # Using it
//
// A Client is used through its exported fields and does no I/O until a
// method is called; the directory is fetched once and cached:
//
//	c := &acme.Client{DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory"}
//
// Every method takes a context first and, when the request is signed by an
// account, the Account (its Key and URL) explicitly:
//
//	acct, err := c.NewAccount(ctx, acme.Account{Key: key, TermsOfServiceAgreed: true}, nil)
//	order, err := c.NewOrder(ctx, acct, acme.Order{Identifiers: ids})
//	order, err = c.FinalizeOrder(ctx, acct, order, csrDER)
//
// The whole issuance is written once, as ObtainCertificate, with a Solver
// that makes challenges answerable (acmez-style):
//
//	res, err := c.ObtainCertificate(ctx, acct, acme.CertificateRequest{
//		Identifiers: ids, Key: certKey, Solver: mySolver, Roots: roots,
//	})
//
// Its steps are methods of their own for callers that need them apart:
// NewOrder (which checks the CA's identifiers), SolveAuthorizations (every
// authorization concurrently: fetch, skip valid, refuse a foreign
// identifier, choose the challenge, Present, answer, poll, CleanUp),
// FinalizeOrder, FetchPreferredChain and VerifyCertificate.
//
// By hand, an issuance is: NewOrder; for each authorization GetAuthorization, pick a
// challenge, make it answerable (see KeyAuthorization, DNS01TXTRecord,
// HTTP01ChallengePath, HTTP01ChallengeURL, TLSALPN01ChallengeCert and package
// acme/standalone), AcceptChallenge, WaitAuthorization; then NewCSR,
// FinalizeOrder and FetchCertificate (or FetchPreferredChain).
//
// # Transport
//
// All retry policy lives in the HTTP layer: nonces are pooled from every
// Replay-Nonce, and newNonce is asked single-flight: a request that finds
// the pool empty waits for a nonce from an answer in flight, or for the
// one newNonce request in flight, and asks newNonce itself only when
// neither is coming (or after waiting a second), so an order of 20 names
// costs one newNonce in all. A caller that runs several sequences of
// requests at once (certificates) says how many with Client.Streams: the
// pool then grows to that many nonces, one newNonce at a time, so the
// sequences do not wait for each other's answers; badNonce
// answers are retried with a fresh nonce and signature up to
// Client.MaxRetries; 5xx answers to GETs and POST-as-GET are retried up to
// 3 times; a 429 or 5xx answer to newAccount, newOrder, finalize or a
// challenge POST is retried with a fresh nonce after its Retry-After (or a
// jittered backoff from 500 ms) at most MaxTransientRetries times and
// within TransientRetryBudget (60 s) and the caller's deadline, and
// otherwise returned as a *Problem with its RetryAfter. Each request runs
// under Client.RequestTimeout within the caller's context; bodies are
// capped at 1 MiB; only https URLs are followed unless
// Client.AllowInsecureHTTP is set.
//
// # Bounds
//
// Every wait is bounded: each request by Client.RequestTimeout (30 s);
// each poll of an order or authorization by Client.PollTimeout (2 min)
// and the caller's deadline, polling from 50 ms doubling to 3 s; a
// Retry-After that would outlast the bound ends the wait at once with a
// *PollError carrying the CA's time (RetryAt); each Solver.CleanUp by
// CleanUpTimeout (1 min).
//
// # Errors
//
// A server error is a *Problem (RFC 7807) carrying the request's method
// and URL and the Retry-After:
//
//	var p *acme.Problem
//	if errors.As(err, &p) && p.Type == acme.ProblemRateLimited { ... p.RetryAfter ... }
//
// Untrusted server data fails with typed errors: ErrInsecureURL,
// ErrMalformedResponse, ErrResponseTooLarge, ErrInvalidToken,
// ErrIdentifierMismatch, *CertificateError. The flow's outcomes are typed
// too, for errors.As: *ValidationError (invalid authorizations, with each
// challenge's problem), *PollError (a wait that ran out of time, with the
// state it was stuck in), *OrderError (an order in an unexpected state),
// *NoChallengeError.
package acme
