package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/worker"
)

// runWorker is "turnstile worker": a worker that serves c.serve until
// c.ctx ends (SIGINT or SIGTERM), then shuts down gracefully.
func runWorker(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile worker", flag.ContinueOnError)
	cfg, code, ok := loadConfig(c, fs, args, "worker", "Runs a worker until SIGINT or SIGTERM. Running tasks get the shutdown\ntimeout to finish; their locks are released before it exits.\n\n"+historyAbout+"\n"+gatewayAbout+"\n"+sweepAbout)
	if !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "turnstile worker: unexpected arguments: %q\n", fs.Args())
		return exitUsage
	}
	logger := cfg.NewLogger(c.stderr)
	app := fx.New(worker.Options(cfg, logger, c.serve, serveAdmin(), recordHistory(c.getenv), gatewayRedis(c.getenv), sweepPeriod(c.getenv)))
	if err := app.Start(c.ctx); err != nil {
		logger.Error("worker did not start", slog.Any("error", err))
		return exitError
	}
	<-c.ctx.Done()
	logger.Info("stopping: running tasks get the shutdown timeout", slog.Duration("shutdown_timeout", cfg.ShutdownTimeout))
	// The signal ended c.ctx; shutdown gets its own deadline, the app's.
	if err := app.Stop(context.WithoutCancel(c.ctx)); err != nil {
		logger.Error("worker did not stop cleanly", slog.Any("error", err))
		return exitError
	}
	return exitOK
}

// loadConfig parses a command's flags and environment into a worker
// Config. It prints the help (with every variable) for -h, and the error
// for a bad value; ok is false when the command should exit with code.
func loadConfig(c *cli, fs *flag.FlagSet, args []string, name, about string) (cfg worker.Config, code int, ok bool) {
	fs.SetOutput(io.Discard) // errors and help are printed below
	cfg, err := worker.LoadConfig(fs, args, c.getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		commandUsage(c.stdout, fs, name, about)
		return cfg, exitOK, false
	case err != nil:
		fmt.Fprintf(c.stderr, "turnstile %s: %v\n\n", name, err)
		commandUsage(c.stderr, fs, name, about)
		return cfg, exitUsage, false
	}
	return cfg, 0, true
}

// commandUsage writes a command's help: what it does, its flags, and the
// environment variables behind them.
func commandUsage(w io.Writer, fs *flag.FlagSet, name, about string) {
	fmt.Fprintf(w, "Usage:\n\n\tturnstile %s [flags]\n\n%s\n\nFlags:\n\n", name, about)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nEnvironment (a flag wins over its variable):\n\n")
	if err := worker.WriteConfigUsage(w); err != nil {
		return // nowhere left to report a failed write
	}
}
