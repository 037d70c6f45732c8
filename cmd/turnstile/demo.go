package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

const demoAbout = `Runs the shop on embedded Redis: a worker with the full middleware chain,
and a generator of concurrent, conflicting orders, payments, duplicate
webhooks, revokes, late payments and refunds. Ends with a summary and the
invariant report; exits 1 if an invariant fails. -no-lock runs the same
workload without locks, to show what they prevent.`

type demoFlags struct {
	orders, concurrency int
	seed                uint64
	redisURL            string
	json, noLock        bool
}

// runDemo is "turnstile demo".
func runDemo(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f demoFlags
	fs.IntVar(&f.orders, "orders", 1000, "orders to generate")
	fs.IntVar(&f.concurrency, "concurrency", 16, "the worker's concurrency")
	fs.Uint64Var(&f.seed, "seed", 1, "seeds the workload and the gateway's latency and failures")
	fs.StringVar(&f.redisURL, "redis-url", "", "run against this Redis instead of an embedded one (keys get a per-run prefix; the asynq queues are shared)")
	fs.BoolVar(&f.json, "json", false, "print the summary as one JSON object")
	fs.BoolVar(&f.noLock, "no-lock", false, "run without locks, to show what they prevent")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			demoUsage(c.stdout, fs)
			return exitOK
		}
		fmt.Fprintf(c.stderr, "turnstile demo: %v\n\n", err)
		demoUsage(c.stderr, fs)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(c.stderr, "turnstile demo: unexpected arguments: %q\n", fs.Args())
		return exitUsage
	case f.orders < 1 || f.concurrency < 1:
		fmt.Fprintln(c.stderr, "turnstile demo: -orders and -concurrency must be positive")
		return exitUsage
	}
	summary, err := demo(c, f)
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile demo: %v\n", err)
		return exitError
	}
	if f.json {
		b, err := json.Marshal(summary)
		if err != nil {
			fmt.Fprintf(c.stderr, "turnstile demo: %v\n", err)
			return exitError
		}
		fmt.Fprintln(c.stdout, string(b))
	} else {
		summary.print(c.stdout)
	}
	if !summary.Report.OK {
		return exitError
	}
	return exitOK
}

func demoUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n\n\tturnstile demo [flags]\n\n%s\n\nFlags:\n\n", demoAbout)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// demoRetryDelay retries a failed job soon: the demo's gateway fails on
// purpose, and asynq's default waits 15 s and more.
func demoRetryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	return min(50*time.Millisecond<<min(n, 5), time.Second)
}

// demo sets the shop up, runs the workload and returns the summary.
func demo(c *cli, f demoFlags) (*demoSummary, error) {
	ctx := c.ctx
	cfg := worker.DefaultConfig()
	cfg.RedisURL, cfg.Concurrency, cfg.PollInterval = f.redisURL, f.concurrency, 10*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	rdb, closeRedis, err := worker.OpenRedis(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	defer func() { _ = closeRedis() }()

	// Metrics go to a reader the summary reads; spans nowhere.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) }()
	tp := noop.NewTracerProvider()

	prefix := "turnstile:demo:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second, Observer: telemetry.LockObserver(tp, mp)})
	if err != nil {
		return nil, err
	}
	defer func() { _ = locker.Close() }()
	gw, err := gateway.NewSimulator(rdb, gateway.Config{Prefix: prefix + "gateway:", Latency: 2 * time.Millisecond, FailureRate: 0.02, Seed: f.seed})
	if err != nil {
		return nil, err
	}
	store := ledger.New(rdb, prefix+"ledger:")
	svc := &jobs.Service{
		Store: store, Gateway: gw, Locker: locker,
		Client: asynq.NewClientFromRedisClient(rdb), PaymentWindow: time.Hour, NoLock: f.noLock,
	}
	stats := newDemoStats()
	w, err := worker.New(worker.Params{
		Config: cfg, Redis: rdb, TaskTypes: stats.wrap(svc.TaskTypes()),
		TracerProvider: tp, MeterProvider: mp, Logger: logger, RetryDelay: demoRetryDelay,
	})
	if err != nil {
		return nil, err
	}
	if err := w.Start(); err != nil {
		return nil, err
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		return w.Shutdown(sctx)
	}
	defer func() { _ = stop() }()

	load := &demoLoad{svc: svc, store: store, inspect: asynq.NewInspectorFromRedisClient(rdb), rand: rand.New(rand.NewPCG(f.seed, 0x7475726e)), stats: stats} //nolint:gosec // G404: a seeded workload, reproducible by -seed.
	progress := newProgress(c.stderr, stats, reader)
	started := time.Now()
	if err := load.run(ctx, f.orders, progress); err != nil {
		return nil, err
	}
	if err := stop(); err != nil {
		return nil, err
	}
	report, err := jobs.Check(ctx, store, gw)
	if err != nil {
		return nil, err
	}
	progress.done()
	return newSummary(f, load, stats, reader, report, time.Since(started)), nil
}
