package main

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

// serveAdmin mounts the admin server on a worker, on Config.AdminAddr
// (off when empty). It starts after the worker and stops before it.
func serveAdmin() fx.Option {
	return fx.Invoke(func(lc fx.Lifecycle, cfg worker.Config, w *worker.Worker, producer *worker.Producer,
		tel *telemetry.Providers, rdb redis.UniversalClient, logger *slog.Logger,
	) error {
		if cfg.AdminAddr == "" {
			return nil
		}
		srv, err := admin.New(admin.Config{Addr: cfg.AdminAddr, Token: cfg.AdminToken}, admin.Deps{
			Locker: w.Locker(), Producer: producer, Metrics: tel.MetricsHandler(),
			Ready:          func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			TracerProvider: tel.TracerProvider(), Logger: logger,
		})
		if err != nil {
			return err
		}
		lc.Append(fx.Hook{
			OnStart: func(ctx context.Context) error {
				ln, err := srv.Listen(ctx)
				if err != nil {
					return err
				}
				logger.InfoContext(ctx, "admin server listening", slog.String("url", "http://"+ln.Addr().String()+"/"))
				serveCtx := context.WithoutCancel(ctx) // the start hook's ctx ends after start
				go func() {
					if err := srv.Serve(ln); err != nil {
						logger.ErrorContext(serveCtx, "admin server", slog.Any("error", err))
					}
				}()
				return nil
			},
			OnStop: srv.Shutdown,
		})
		return nil
	})
}
