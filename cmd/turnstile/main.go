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
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/worker"
)

// Exit codes, as the go command uses them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// cli is what a command runs with: its context (ended by SIGINT or
// SIGTERM), output streams, environment, the task types it enqueues, and
// what a worker serves.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	getenv         func(string) string
	taskTypes      []worker.TaskType
	serve          fx.Option
}

// command is one subcommand: its name, a one-line summary for the usage
// text, and its entry point, which gets the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(c *cli, args []string) int
}

// commands lists the subcommands in the order usage shows them.
var commands = []command{
	{name: "demo", summary: "run the shop on embedded Redis and check its invariants", run: runDemo},
	{name: "worker", summary: "run a worker until SIGINT or SIGTERM", run: runWorker},
	{name: "enqueue", summary: "check a payload and enqueue a task", run: runEnqueue},
	{name: "admin", summary: "run the admin server alone against a Redis URL", run: runAdmin},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	c := &cli{ctx: ctx, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, taskTypes: taskTypes(), serve: serveShop()}
	code := c.run(os.Args[1:])
	stop()
	os.Exit(code)
}

// run parses the global flags and dispatches to a subcommand. It returns
// the process exit code: 0 on success and for help, 2 for usage errors.
func (c *cli) run(args []string) int {
	stdout, stderr := c.stdout, c.stderr
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
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd.run(c, rest)
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
	for _, cmd := range commands {
		fmt.Fprintf(tw, "\t%s\t%s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(tw, "\t%s\t%s\n", "help", "show this help")
	if err := tw.Flush(); err != nil {
		return // nowhere left to report a failed write
	}
	fmt.Fprint(w, "\nRun \"turnstile <command> -h\" for a command's flags.\n")
}
