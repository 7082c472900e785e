// Command challtestsrv-dns is a DNS "program" for the dnsexec solver plugin
// that sets and clears TXT records in pebble-challtestsrv through its
// management API. It follows the dnsexec contract:
//
//	challtestsrv-dns present <fqdn> <value>
//	challtestsrv-dns cleanup <fqdn> <value>
//
// The management API is at $CHALLTESTSRV_URL (default http://127.0.0.1:8055).
// A real deployment puts a program of the same shape in front of its DNS
// provider's API.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 4 || (os.Args[1] != "present" && os.Args[1] != "cleanup") {
		fmt.Fprintln(os.Stderr, "usage: challtestsrv-dns present|cleanup <fqdn> <value>")
		os.Exit(2)
	}
	base := os.Getenv("CHALLTESTSRV_URL")
	if base == "" {
		base = "http://127.0.0.1:8055"
	}
	path := "/set-txt"
	if os.Args[1] == "cleanup" {
		path = "/clear-txt"
	}
	if err := post(base+path, os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "challtestsrv-dns:", err)
		os.Exit(1)
	}
	fmt.Printf("%s TXT %s\n", os.Args[1], os.Args[2])
}

func post(url, fqdn, value string) error {
	body, err := json.Marshal(map[string]string{"host": fqdn, "value": value})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting to %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("posting to %s: %s: %s", url, resp.Status, msg)
	}
	return nil
}
