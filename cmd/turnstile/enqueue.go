package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

const enqueueAbout = `Checks a payload with the same code the worker runs and enqueues a task of
the given type with the type's queue, retries and timeout. Prints the task ID.
Needs TURNSTILE_REDIS_URL (or -redis-url): an embedded Redis would lose the task.

The enqueue is traced as a "send <type>" span, exported as OTEL_* says (as for
the worker; unset: nowhere) and flushed before exit. With TRACEPARENT (and
TRACESTATE, BAGGAGE) set, as CI systems and shell tools hand their trace on,
the send span is a child of that span, and the worker's "process <type>"
span joins the same trace.`

// enqueueSettings are the worker settings (worker.ConfigVars, by flag
// name) enqueue reads; -h lists these and no others.
var enqueueSettings = []string{"redis-url", "log-level", "log-format"}

// enqueueTelemetry is the environment, beside TRACEPARENT, that shapes the
// send span; -h lists it.
const enqueueTelemetry = `OTEL_TRACES_EXPORTER       otlp, console or none (default none)
OTEL_EXPORTER_OTLP_*       OTLP endpoint, protocol (grpc or http/protobuf), headers, ...
OTEL_SERVICE_NAME          service.name of the span (default turnstile-enqueue)
TRACEPARENT, TRACESTATE    the caller's W3C trace context: the send span's parent
BAGGAGE                    the caller's W3C baggage`

// flushTimeout bounds how long enqueue waits, before it exits, for its
// span to reach a collector.
const flushTimeout = 5 * time.Second

// runEnqueue is "turnstile enqueue <type> -json '<payload>'".
func runEnqueue(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile enqueue", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are printed below
	payload := fs.String("json", "", "the task's payload, as JSON")
	taskID := fs.String("task-id", "", "the task's ID; a second task with the same ID is refused")
	unique := fs.Duration("unique", 0, "refuse a duplicate (same type, queue and payload) for this long, e.g. 1h")
	queue := fs.String("queue", "", "enqueue to this queue instead of the type's own")
	settings := defineSettings(fs)
	// The type comes first; package flag stops at the first non-flag.
	var typ string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		typ, args = args[0], args[1:]
	}
	cfg, code, ok := loadEnqueueConfig(c, fs, args, settings)
	if !ok {
		return code
	}
	switch {
	case typ == "" || fs.NArg() > 0:
		fmt.Fprintf(c.stderr, "turnstile enqueue: want one task type before the flags, got %q\n", append([]string{typ}, fs.Args()...))
		return exitUsage
	case cfg.RedisURL == "":
		fmt.Fprintln(c.stderr, "turnstile enqueue: set TURNSTILE_REDIS_URL or -redis-url: an embedded Redis would lose the task on exit")
		return exitUsage
	}
	var opts []asynq.Option
	if *taskID != "" {
		opts = append(opts, asynq.TaskID(*taskID))
	}
	if *unique > 0 {
		opts = append(opts, asynq.Unique(*unique))
	}
	if *queue != "" {
		opts = append(opts, asynq.Queue(*queue))
	}

	cfg.LogLevel = max(cfg.LogLevel, slog.LevelWarn) // stdout is the task ID; stderr only problems
	logger := cfg.NewLogger(c.stderr)
	tel, err := telemetry.Setup(c.ctx, telemetry.Config{ServiceName: "turnstile-enqueue", Logger: logger})
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	defer func() {
		// Before exit, or the batched send span is lost; WithoutCancel: an
		// interrupted enqueue still reports what it did.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), flushTimeout)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			logger.WarnContext(ctx, "spans not flushed", slog.Any("error", err))
		}
	}()
	rdb, closeRedis, err := worker.OpenRedis(c.ctx, cfg, logger)
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	defer func() {
		if err := closeRedis(); err != nil {
			logger.Warn("close redis", slog.Any("error", err))
		}
	}()
	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), tel.TracerProvider(), c.taskTypes...)
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	// The caller's trace, if it handed one on, is the send span's parent.
	ctx := telemetry.ContextFromEnv(c.ctx, c.getenv)
	info, err := producer.Enqueue(ctx, typ, []byte(*payload), opts...)
	switch {
	case errors.Is(err, worker.ErrUnknownType):
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v; known types: %s\n", err, knownTypes(producer))
		return exitUsage
	case err != nil:
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n", err)
		return exitError
	}
	fmt.Fprintln(c.stdout, info.ID)
	return exitOK
}

// defineSettings defines on fs a flag for each of enqueueSettings, worded
// as the worker's, and returns them by name. They are strings: the
// worker's configuration parses them (loadEnqueueConfig), so that a bad
// value gets the same error as from the worker.
func defineSettings(fs *flag.FlagSet) map[string]*string {
	out := make(map[string]*string, len(enqueueSettings))
	for _, v := range worker.ConfigVars() {
		if slices.Contains(enqueueSettings, v.Flag) {
			out[v.Flag] = fs.String(v.Flag, "", fmt.Sprintf("%s (env %s, default %s)", v.Usage, v.Env, v.Default))
		}
	}
	return out
}

// loadEnqueueConfig parses enqueue's flags, then builds the worker
// configuration from enqueue's settings only: the flags among them that
// were given, over their variables. A variable enqueue does not read
// cannot fail it. It prints the help for -h and the error for a bad
// value; ok is false when the command should exit with code.
func loadEnqueueConfig(c *cli, fs *flag.FlagSet, args []string, settings map[string]*string) (cfg worker.Config, code int, ok bool) {
	usageErr := func(err error) (worker.Config, int, bool) {
		fmt.Fprintf(c.stderr, "turnstile enqueue: %v\n\n", err)
		enqueueUsage(c.stderr, fs)
		return cfg, exitUsage, false
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			enqueueUsage(c.stdout, fs)
			return cfg, exitOK, false
		}
		return usageErr(err)
	}
	var given []string
	fs.Visit(func(f *flag.Flag) {
		if v, ok := settings[f.Name]; ok {
			given = append(given, "-"+f.Name+"="+*v)
		}
	})
	envs := map[string]bool{}
	for _, v := range worker.ConfigVars() {
		if slices.Contains(enqueueSettings, v.Flag) {
			envs[v.Env] = true
		}
	}
	getenv := func(k string) string {
		if envs[k] {
			return c.getenv(k)
		}
		return ""
	}
	all := flag.NewFlagSet("turnstile enqueue", flag.ContinueOnError)
	all.SetOutput(io.Discard)
	cfg, err := worker.LoadConfig(all, given, getenv)
	if err != nil {
		return usageErr(err)
	}
	return cfg, 0, true
}

// enqueueUsage writes enqueue's help: what it does, its flags, and the
// environment behind them.
func enqueueUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n\n\tturnstile enqueue <type> [flags]\n\n%s\n\nFlags:\n\n", enqueueAbout)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprint(w, "\nEnvironment (a flag wins over its variable):\n\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tFLAG\tDEFAULT\tMEANING")
	for _, v := range worker.ConfigVars() {
		if slices.Contains(enqueueSettings, v.Flag) {
			fmt.Fprintf(tw, "%s\t-%s\t%s\t%s\n", v.Env, v.Flag, v.Default, v.Usage)
		}
	}
	if err := tw.Flush(); err != nil {
		return // nowhere left to report a failed write
	}
	fmt.Fprintf(w, "\nTracing:\n\n%s\n", enqueueTelemetry)
}

func knownTypes(p *worker.Producer) string {
	var names []string
	for _, tt := range p.Types() {
		names = append(names, tt.Type)
	}
	if len(names) == 0 {
		return "none yet (this binary serves no task types)"
	}
	return strings.Join(names, ", ")
}
