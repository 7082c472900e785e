package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"log"
	"time"

	"github.com/acmehook/acmehook/acme"
)

// Issue a certificate for example.com with dns-01. The CA here is the
// test Pebble; against a real CA set only DirectoryURL.
func Example() {
	client := &acme.Client{DirectoryURL: pebble.DirectoryURL, HTTPClient: pebble.HTTPClient()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	acct, err := client.NewAccount(ctx, acme.Account{Key: accountKey, TermsOfServiceAgreed: true}, nil)
	if err != nil {
		log.Fatal(err)
	}

	ids := []acme.Identifier{acme.DNS("example.com")}
	order, err := client.NewOrder(ctx, acct, acme.Order{Identifiers: ids})
	if err != nil {
		log.Fatal(err)
	}
	for _, url := range order.Authorizations {
		authz, err := client.GetAuthorization(ctx, acct, url)
		if err != nil {
			log.Fatal(err)
		}
		ch, _ := authz.Challenge(acme.ChallengeDNS01)
		keyAuth, err := acme.KeyAuthorization(ch.Token, accountKey.Public())
		if err != nil {
			log.Fatal(err)
		}
		// Publish the TXT record with your DNS provider; here, the test DNS.
		publishTXT(acme.DNS01TXTRecordName(authz.Identifier.Value), acme.DNS01TXTRecord(keyAuth))
		if _, err := client.AcceptChallenge(ctx, acct, ch); err != nil {
			log.Fatal(err)
		}
		if _, err := client.WaitAuthorization(ctx, acct, url); err != nil {
			log.Fatal(err)
		}
	}

	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := acme.NewCSR(certKey, ids)
	if err != nil {
		log.Fatal(err)
	}
	if order, err = client.FinalizeOrder(ctx, acct, order, csr); err != nil {
		log.Fatal(err)
	}
	chain, err := client.FetchCertificate(ctx, acct, order.Certificate)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(chain.Certificates[0].DNSNames, len(chain.Certificates) > 1)
	// Output: [example.com] true
}
