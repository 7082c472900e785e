package main

import (
	"context"
	"fmt"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
	"github.com/acmehook/acmehook/engine/fleet"
)

// checkSolve is "acmehook check --solve NAME": it has each identifier of
// the certificate presented, self-checked and cleaned up by its solver
// without contacting the CA, and prints one line per identifier.
func (c *cli) checkSolve(ctx context.Context, cfg *config.Config, name string) error {
	if cfg.Certificate(name) == nil {
		return usagef("--solve %q: no such certificate in %s", name, cfg.File())
	}
	// On a fleet, the other nodes present the challenges too, so that the
	// self-check, which may land on any node, checks them all.
	var relay engine.Relay
	if cfg.Store.Backend == config.BackendEtcd {
		r, err := fleet.StartRelay(ctx, cfg.Store, fleet.RelayOptions{Logger: c.log})
		if err != nil {
			return fmt.Errorf("starting the challenge relay: %w", err)
		}
		defer r.Close()
		relay = r
	}
	results, err := engine.CheckSolve(ctx, cfg, name, c.log, relay)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		ch := r.Challenge
		if ch == "" {
			ch = "no challenge"
		}
		status := "ok: presented, self-checked, cleaned up"
		if r.Err != nil {
			status = "FAILED: " + r.Err.Error()
		}
		fmt.Fprintf(c.stdout, "%s by %s (%s, %s): %s\n", r.Identifier, r.Solver, ch, r.Duration.Round(time.Millisecond), status)
		if r.CleanUpErr != nil {
			fmt.Fprintf(c.stdout, "%s: cleanup FAILED: %v\n", r.Identifier, r.CleanUpErr)
		}
		if !r.OK() {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(c.stdout, "certificate %s: %d of %d identifiers failed (the CA was not contacted)\n", name, failed, len(results))
		return errReported
	}
	fmt.Fprintf(c.stdout, "certificate %s: every identifier passed (the CA was not contacted)\n", name)
	return nil
}
