package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// demoPlan says what the demo will do once it exists. It must not claim more
// than that: nothing here runs yet.
const demoPlan = `turnstile demo is not built yet; it arrives in a later issue.

When it lands, it will:
  - start an embedded Redis (miniredis), so it needs no set-up,
  - run a worker whose jobs take per-resource locks,
  - generate concurrent, conflicting orders, payments, refunds and revokes,
  - end with an invariant report: for every ticket type
    sold + reserved + available == capacity, the gateway ledger matches the
    order ledger, no order is both refunded and revoked.
`

// runDemo is "turnstile demo". For now it prints what the demo will do and
// exits 0.
func runDemo(c *cli, args []string) int {
	stdout, stderr := c.stdout, c.stderr
	fs := flag.NewFlagSet("turnstile demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to stdout or stderr
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			demoUsage(stdout, fs)
			return exitOK
		}
		demoUsage(stderr, fs) // after flag's own one-line error
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "turnstile demo: unexpected arguments: %q\n", fs.Args())
		return exitUsage
	}
	if _, err := fmt.Fprint(stdout, demoPlan); err != nil {
		fmt.Fprintf(stderr, "turnstile demo: %v\n", err)
		return exitError
	}
	return exitOK
}

// demoUsage writes the help for "turnstile demo" and its flags.
func demoUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, "Usage:\n\n\tturnstile demo\n\nRuns the demo on embedded Redis (not built yet).\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}
