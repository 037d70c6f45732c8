// Command turnstile runs and demonstrates turnstile's lock-guarded job
// workers.
//
// Usage:
//
//	turnstile <command> [flags]
//
// Run "turnstile help" for the list of commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// Exit codes, as the go command uses them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// command is one subcommand: its name, a one-line summary for the usage
// text, and its entry point, which gets the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order usage shows them. More
// (worker, enqueue, locks, admin) arrive as they are built.
var commands = []command{
	{name: "demo", summary: "run the demo on embedded Redis (not built yet)", run: runDemo},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses the global flags and dispatches to a subcommand. It returns
// the process exit code: 0 on success and for help, 2 for usage errors.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("turnstile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to stdout or stderr
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Help that was asked for goes to stdout, so it can be piped.
			usage(stdout)
			return exitOK
		}
		usage(stderr) // after flag's own one-line error
		return exitUsage
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return exitUsage
	}

	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(rest, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "turnstile: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

// usage writes the top-level help: synopsis and the list of subcommands.
func usage(w io.Writer) {
	fmt.Fprint(w, "turnstile runs job-queue workers whose jobs are guarded by per-resource Redis locks.\n\n")
	fmt.Fprint(w, "Usage:\n\n\tturnstile <command> [flags]\n\nCommands:\n\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "\t%s\t%s\n", c.name, c.summary)
	}
	fmt.Fprintf(tw, "\t%s\t%s\n", "help", "show this help")
	if err := tw.Flush(); err != nil {
		return // nowhere left to report a failed write
	}
	fmt.Fprint(w, "\nRun \"turnstile <command> -h\" for a command's flags.\n")
}
