package main

import (
	"context"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

// serveAdmin mounts the admin server on a worker, on Config.AdminAddr
// (off when empty). It starts after the worker and stops before it. Its
// Tracker watches the worker's locks for the locks page.
func serveAdmin() fx.Option {
	return fx.Options(
		fx.Provide(admin.NewTracker, func(t *admin.Tracker) lock.Observer { return t }),
		fx.Invoke(mountAdmin),
	)
}

func mountAdmin(lc fx.Lifecycle, cfg worker.Config, w *worker.Worker, producer *worker.Producer, inspect *asynq.Inspector,
	tel *telemetry.Providers, rdb redis.UniversalClient, tracker *admin.Tracker, logger *slog.Logger, shop adminShop,
) error {
	if cfg.AdminAddr == "" {
		return nil
	}
	srv, err := admin.New(admin.Config{Addr: cfg.AdminAddr, Token: cfg.AdminToken}, admin.Deps{
		Locker: w.Locker(), Producer: producer, Metrics: tel.MetricsHandler(), Dashboard: dashboardConn(rdb),
		Tracker: tracker, Inspector: inspect, Shop: shop.Shop,
		Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		TracerProvider: tel.TracerProvider(), Logger: logger,
	})
	if err != nil {
		return err
	}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			addr, err := srv.Start(ctx)
			if err != nil {
				return err
			}
			logger.InfoContext(ctx, "admin server listening", slog.String("url", "http://"+addr.String()+"/"))
			return nil
		},
		OnStop: srv.Shutdown,
	})
	return nil
}

// connOpt makes the dashboard clients of its own with the options of the
// worker's client: asynqmon closes what it is given, and the worker's
// client must outlive it.
type connOpt struct{ rdb redis.UniversalClient }

// MakeRedisClient implements asynq.RedisConnOpt.
func (o connOpt) MakeRedisClient() any {
	switch c := o.rdb.(type) {
	case *redis.Client: // single node and Sentinel (its dialer asks the sentinels)
		return redis.NewClient(c.Options())
	case *redis.ClusterClient:
		return redis.NewClusterClient(c.Options())
	}
	return nil
}

// dashboardConn is nil, and the dashboard off, for a client of a kind the
// dashboard cannot copy.
func dashboardConn(rdb redis.UniversalClient) asynq.RedisConnOpt {
	switch rdb.(type) {
	case *redis.Client, *redis.ClusterClient:
		return connOpt{rdb}
	}
	return nil
}
