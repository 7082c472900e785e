// Command killhost is a host for TestPluginsDieWithHost: it launches the
// faulty plugin (its path is the first argument) with a Present that never
// returns, and the standalone plugin (the second) serving http-01 on
// 127.0.0.1:<third argument>, prints "ready" and waits to be killed.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/acmehook/acmehook/plugin/host"
	"github.com/acmehook/acmehook/plugin/sdk"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	faulty, err := host.Launch(ctx, host.LaunchOptions{Name: "faulty", Path: os.Args[1], Config: map[string]any{"mode": "hang"}})
	if err != nil {
		return err
	}
	_, err = host.Launch(ctx, host.LaunchOptions{Name: "standalone", Path: os.Args[2],
		Config: map[string]any{"http_listen": []any{"127.0.0.1:" + os.Args[3]}, "tls_listen": []any{}}})
	if err != nil {
		return err
	}
	go faulty.Present(ctx, &sdk.PresentRequest{Challenge: sdk.Challenge{Type: "http-01",
		Identifier: sdk.Identifier{Type: "dns", Value: "example.com"}, Token: "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"}})
	time.Sleep(100 * time.Millisecond) // the Present is in flight
	fmt.Println("ready")
	select {}
}
