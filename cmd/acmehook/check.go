package main

import (
	"context"
	"fmt"
	"time"

	"github.com/acmehook/acmehook/engine"
	"github.com/acmehook/acmehook/engine/config"
)

// checkSolve is "acmehook check --solve NAME": it has each identifier of
// the certificate presented, self-checked and cleaned up by its solver
// without contacting the CA, and prints one line per identifier.
func (c *cli) checkSolve(ctx context.Context, cfg *config.Config, name string) error {
	if cfg.Certificate(name) == nil {
		return usagef("--solve %q: no such certificate in %s", name, cfg.File())
	}
	results, err := engine.CheckSolve(ctx, cfg, name, c.log)
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
