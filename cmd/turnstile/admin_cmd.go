package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

const adminAbout = `Runs the admin server alone against TURNSTILE_REDIS_URL: the locks page
and API, the asynq dashboard, the enqueue API, /metrics (the queues only:
lock metrics come from the workers' own /metrics) and health, until SIGINT
or SIGTERM.`

// runAdmin is "turnstile admin".
func runAdmin(c *cli, args []string) int {
	fs := flag.NewFlagSet("turnstile admin", flag.ContinueOnError)
	cfg, code, ok := loadConfig(c, fs, args, "admin", adminAbout)
	if !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(c.stderr, "turnstile admin: unexpected arguments: %q\n", fs.Args())
		return exitUsage
	case cfg.RedisURL == "":
		fmt.Fprintln(c.stderr, "turnstile admin: set TURNSTILE_REDIS_URL or -redis-url: an embedded Redis would show nothing")
		return exitUsage
	case cfg.AdminAddr == "":
		fmt.Fprintln(c.stderr, "turnstile admin: TURNSTILE_ADMIN_ADDR is empty: nothing to serve")
		return exitUsage
	}
	logger := cfg.NewLogger(c.stderr)
	if err := serveAdminAlone(c.ctx, cfg, c.taskTypes, logger); err != nil {
		logger.Error("admin server", slog.Any("error", err))
		return exitError
	}
	return exitOK
}

// queueMetricsTTL matches the worker's: queue metrics are read at most
// this often.
const queueMetricsTTL = 10 * time.Second

// shutdownGrace bounds how long requests in flight get at shutdown.
const shutdownGrace = 10 * time.Second

func serveAdminAlone(ctx context.Context, cfg worker.Config, types []worker.TaskType, logger *slog.Logger) (err error) {
	rdb, closeRedis, err := worker.OpenRedis(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeRedis()) }()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "turnstile-admin", Logger: logger})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tel.Shutdown(context.WithoutCancel(ctx))) }()
	queues := make([]string, 0, len(cfg.Queues))
	for q := range cfg.Queues {
		queues = append(queues, q)
	}
	if err := tel.Register(telemetry.NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), queues, queueMetricsTTL)); err != nil {
		return err
	}
	locker, err := lock.New(rdb, lock.Config{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, locker.Close()) }()
	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), tel.TracerProvider(), types...)
	if err != nil {
		return err
	}
	srv, err := admin.New(admin.Config{Addr: cfg.AdminAddr, Token: cfg.AdminToken}, admin.Deps{
		Locker: locker, Producer: producer, Metrics: tel.MetricsHandler(), Dashboard: dashboardConn(rdb),
		Inspector:      asynq.NewInspectorFromRedisClient(rdb),
		Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		TracerProvider: tel.TracerProvider(), Logger: logger,
	})
	if err != nil {
		return err
	}
	addr, err := srv.Start(ctx)
	if err != nil {
		return err
	}
	logger.InfoContext(ctx, "admin server listening", slog.String("url", "http://"+addr.String()+"/locks/"))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	return srv.Shutdown(sctx)
}
