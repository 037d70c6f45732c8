package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/turnstilehq/turnstile/admin"
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
workload without locks, to show what they prevent.

With -redis-url, the run writes under a run ID of its own (in its order,
ticket type and task IDs, lock keys and ledger prefix), so runs may follow
one another on one Redis, and removes every key and task it wrote when it
ends (with -serve, when the pages stop), and nothing else; -keep leaves
them, and the summary says where.

` + historyAbout

type demoFlags struct {
	orders, concurrency int
	seed                uint64
	redisURL, adminAddr string
	json, noLock, serve bool
	keep                bool
}

// runDemo is "turnstile demo".
func runDemo(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f demoFlags
	fs.IntVar(&f.orders, "orders", 1000, "orders to generate")
	fs.IntVar(&f.concurrency, "concurrency", 16, "the worker's concurrency")
	fs.Uint64Var(&f.seed, "seed", 1, "seeds the workload and the gateway's latency and failures")
	fs.StringVar(&f.redisURL, "redis-url", "", "run against this Redis instead of an embedded one (the run's keys and tasks carry a run ID and are removed at the end; the asynq queues are shared)")
	fs.BoolVar(&f.keep, "keep", false, "with -redis-url, leave the run's keys and tasks in Redis, to look at them")
	fs.BoolVar(&f.json, "json", false, "print the summary as one JSON object")
	fs.BoolVar(&f.noLock, "no-lock", false, "run without locks, to show what they prevent")
	fs.StringVar(&f.adminAddr, "admin-addr", worker.DefaultAdminAddr, "serve the admin pages (locks, dashboard) here during the run; empty: off")
	fs.BoolVar(&f.serve, "serve", false, "after the summary, keep the admin pages up until interrupted")
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
	var summary *demoSummary
	err := demo(c, f, func(s *demoSummary) error {
		summary = s
		if !f.json {
			s.print(c.stdout)
			return nil
		}
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.stdout, string(b))
		return err
	})
	if err != nil {
		fmt.Fprintf(c.stderr, "turnstile demo: %v\n", err)
		return exitError
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

// demo sets the shop up, runs the workload and hands the summary to
// report while the admin pages and Redis are still up (with -serve, until
// interrupted).
func demo(c *cli, f demoFlags, report func(*demoSummary) error) error {
	ctx := c.ctx
	cfg := worker.DefaultConfig()
	cfg.RedisURL, cfg.Concurrency, cfg.PollInterval = f.redisURL, f.concurrency, 10*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	logger := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	rdb, closeRedis, err := worker.OpenRedis(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = closeRedis() }()

	// Telemetry as a worker's, from OTEL_* (unset: spans go nowhere), with
	// one more metric reader for the progress bar and the summary; the
	// admin server serves the same metrics at /metrics.
	reader := sdkmetric.NewManualReader()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "turnstile-demo", Logger: logger, MetricReaders: []sdkmetric.Reader{reader}})
	if err != nil {
		return err
	}
	defer func() {
		// Last: the worker's and the admin server's spans end before.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			fmt.Fprintf(c.stderr, "demo: %v\n", err) // spans a collector did not get
		}
	}()
	if err := tel.Register(telemetry.NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), slices.Sorted(maps.Keys(cfg.Queues)), queueMetricsTTL)); err != nil {
		return err
	}
	tp, mp := tel.TracerProvider(), tel.MeterProvider()

	runID := newRunID()
	prefix := demoPrefix(runID)
	tracker := admin.NewTracker()
	observer := lock.Observers(telemetry.LockObserver(tp, mp), tracker)
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second, Observer: observer})
	if err != nil {
		return err
	}
	defer func() { _ = locker.Close() }()
	// The gateway is a third party: its books live apart from the shop's,
	// in memory, so that a crash or failover that takes writes back from
	// the shop's Redis does not take back its captures, as a real one's
	// would not.
	books := miniredis.NewMiniRedis()
	if err := books.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("demo: start the gateway's redis: %w", err)
	}
	defer books.Close()
	booksClient := redis.NewClient(&redis.Options{Addr: books.Addr()})
	defer func() { _ = booksClient.Close() }()
	gw, err := gateway.NewSimulator(booksClient, gateway.Config{Prefix: prefix + "gateway:", Latency: 2 * time.Millisecond, FailureRate: 0.02, Seed: f.seed})
	if err != nil {
		return err
	}
	hist, closeHistory, err := openHistory(c.getenv)
	if err != nil {
		return err
	}
	defer func() {
		if err := closeHistory(); err != nil {
			fmt.Fprintf(c.stderr, "demo: %v\n", err) // the summary is out; a gap in the history must not pass unseen
		}
	}()
	store := ledger.New(rdb, prefix+"ledger:").WithHistory(hist)
	svc := &jobs.Service{
		Store: store, Gateway: gw, Locker: locker,
		Client: asynq.NewClientFromRedisClient(rdb), PaymentWindow: time.Hour, NoLock: f.noLock,
	}
	stats := newDemoStats()
	w, err := worker.New(worker.Params{
		Config: cfg, Redis: rdb, TaskTypes: stats.wrap(svc.TaskTypes()),
		TracerProvider: tp, MeterProvider: mp, Logger: logger, RetryDelay: demoRetryDelay, LockObserver: tracker,
	})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
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

	load := &demoLoad{svc: svc, store: store, inspect: asynq.NewInspectorFromRedisClient(rdb), rand: rand.New(rand.NewPCG(f.seed, 0x7475726e)), stats: stats, runID: runID} //nolint:gosec // G404: a seeded workload, reproducible by -seed.
	// The run's keys and tasks go when it ends, also when it fails; with
	// -serve, once the admin pages stop (deferred before them, so run
	// after), so that the dashboard still shows the run's tasks.
	embedded := f.redisURL == ""
	afterServe := f.serve && f.adminAddr != "" && !embedded && !f.keep
	defer func() { _ = stop(); load.cleanupAfter(ctx, c.stderr, rdb, embedded, f.keep, afterServe) }()
	if f.adminAddr != "" {
		producer, err := worker.NewProducer(svc.Client, tp, svc.TaskTypes()...)
		if err != nil {
			return err
		}
		stopAdmin := demoAdmin(ctx, c, f.adminAddr, admin.Deps{
			Locker: w.Locker(), Producer: producer, Tracker: tracker, Dashboard: dashboardConn(rdb),
			Ready: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }, TracerProvider: tp, Logger: logger,
			Metrics: tel.MetricsHandler(),
		})
		defer stopAdmin(f.serve)
	}
	progress := newProgress(c.stderr, stats, reader)
	started := time.Now()
	if err := load.run(ctx, f.orders, progress); err != nil {
		return err
	}
	if err := stop(); err != nil {
		return err
	}
	checked, err := jobs.Check(ctx, store, gw)
	if err != nil {
		return err
	}
	progress.done()
	summary := newSummary(f, load, stats, reader, checked, time.Since(started))
	summary.Cleanup = cleanupSummary{RunID: runID, AfterServe: true}
	if !afterServe {
		summary.Cleanup = load.cleanup(ctx, rdb, embedded, f.keep)
	}
	return report(summary)
}

// demoAdmin serves the admin pages during the run. A port in use only
// costs the pages: the demo goes on and says so. The returned func stops
// the server, after waiting for an interrupt when hold is set.
func demoAdmin(ctx context.Context, c *cli, addr string, deps admin.Deps) func(hold bool) {
	srv, err := admin.New(admin.Config{Addr: addr}, deps)
	var at net.Addr
	if err == nil {
		at, err = srv.Start(ctx)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "demo: admin pages off: %v\n", err)
		return func(bool) {}
	}
	fmt.Fprintf(c.stderr, "demo: locks at http://%s/locks/, dashboard at http://%s/dashboard/\n", at, at)
	return func(hold bool) {
		if hold {
			fmt.Fprintln(c.stderr, "demo: serving the admin pages until interrupted (ctrl-C)")
			<-ctx.Done()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			fmt.Fprintf(c.stderr, "demo: admin pages: %v\n", err)
		}
	}
}
