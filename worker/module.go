package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
)

// Module provides, from a Config and a *slog.Logger in the graph: the jobs'
// Redis client (closed last), the lock masters' clients when
// Config.LockURLs is set (LockRedis), telemetry providers, the Worker (started
// and stopped with the app), an asynq Client and Inspector on the same
// Redis, and a Producer of the served task types. Contribute task types
// with ProvideTaskTypes. The telemetry's /metrics handler carries asynq's
// queue metrics for the served queues; with Config.MetricsAddr set it is
// served there.
var Module = fx.Module("worker",
	fx.Provide(
		provideRedis,
		provideLockRedis,
		provideTelemetry,
		provideWorker,
		func(rdb redis.UniversalClient) *asynq.Client { return asynq.NewClientFromRedisClient(rdb) },
		func(rdb redis.UniversalClient) *asynq.Inspector { return asynq.NewInspectorFromRedisClient(rdb) },
		provideProducer,
	),
	fx.Invoke(func(*Worker) {}),
	fx.Invoke(registerQueueMetrics),
	fx.Invoke(serveMetrics),
)

// queueMetricsTTL is how stale the queue metrics may be: asynq's
// GetQueueInfo is too expensive to run on every scrape.
const queueMetricsTTL = 10 * time.Second

// registerQueueMetrics adds asynq's queue metrics, for the served queues,
// to /metrics.
func registerQueueMetrics(cfg Config, inspect *asynq.Inspector, tel *telemetry.Providers) error {
	return tel.Register(telemetry.NewQueueCollector(inspect, slices.Sorted(maps.Keys(cfg.Queues)), queueMetricsTTL))
}

// ProvideTaskTypes contributes the task types that constructor returns
// (a func returning []TaskType, or []TaskType and an error, with any
// dependencies from the graph as arguments) to Module's worker and
// Producer.
func ProvideTaskTypes(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(constructor, fx.ResultTags(`group:"turnstile.task_types,flatten"`)))
}

// stopMargin is the time shutdown gets beyond Config.ShutdownTimeout: for
// abandoned handlers to return, telemetry to flush and Redis to close.
const stopMargin = 15 * time.Second

// Options are the fx options of a worker process: cfg and logger in the
// graph, Module, fx's own events logged through logger at debug level
// (errors at error level), and a stop timeout that exceeds cfg's
// shutdown timeout. fx.New(worker.Options(cfg, logger, more...)).Run()
// runs a worker until SIGINT or SIGTERM.
func Options(cfg Config, logger *slog.Logger, more ...fx.Option) fx.Option {
	return fx.Options(
		fx.Supply(cfg, logger),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: logger.With(slog.String("source", "fx"))}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.StopTimeout(cfg.ShutdownTimeout+stopMargin),
		Module,
		fx.Options(more...),
	)
}

// connectTimeout bounds the first connection to Redis at start.
const connectTimeout = 10 * time.Second

func provideRedis(lc fx.Lifecycle, cfg Config, logger *slog.Logger) (redis.UniversalClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	rdb, closeRedis, err := OpenRedis(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(closeRedis))
	return rdb, nil
}

// LockRedis are the clients of Config.LockURLs, empty when the locks share
// the jobs' Redis.
type LockRedis []redis.UniversalClient

func provideLockRedis(lc fx.Lifecycle, cfg Config, logger *slog.Logger) (LockRedis, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	clients, closeAll, err := OpenLockRedis(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(closeAll))
	return clients, nil
}

func provideTelemetry(lc fx.Lifecycle, logger *slog.Logger) (*telemetry.Providers, error) {
	p, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "turnstile-worker", Logger: logger})
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(p.Shutdown))
	return p, nil
}

type workerIn struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    Config
	Redis     redis.UniversalClient
	LockRedis LockRedis
	Telemetry *telemetry.Providers
	Logger    *slog.Logger
	TaskTypes []TaskType `group:"turnstile.task_types"`
	// LockObserver is optional: provide one to watch the worker's locks.
	LockObserver lock.Observer `optional:"true"`
}

func provideWorker(in workerIn) (*Worker, error) {
	w, err := New(Params{
		Config: in.Config, Redis: in.Redis, LockRedis: in.LockRedis, TaskTypes: in.TaskTypes,
		TracerProvider: in.Telemetry.TracerProvider(), MeterProvider: in.Telemetry.MeterProvider(),
		Logger: in.Logger, LockObserver: in.LockObserver,
	})
	if err != nil {
		return nil, err
	}
	in.Lifecycle.Append(fx.Hook{
		OnStart: func(context.Context) error {
			in.Logger.Info("worker starting", slog.Any("config", in.Config), slog.Int("task_types", len(in.TaskTypes)))
			return w.Start()
		},
		OnStop: w.Shutdown,
	})
	return w, nil
}

type producerIn struct {
	fx.In
	Client    *asynq.Client
	Telemetry *telemetry.Providers
	TaskTypes []TaskType `group:"turnstile.task_types"`
}

func provideProducer(in producerIn) (*Producer, error) {
	return NewProducer(in.Client, in.Telemetry.TracerProvider(), in.TaskTypes...)
}

// serveMetrics serves the telemetry's Prometheus handler on
// Config.MetricsAddr, when set.
func serveMetrics(lc fx.Lifecycle, cfg Config, p *telemetry.Providers, logger *slog.Logger) {
	if cfg.MetricsAddr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", p.MetricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.MetricsAddr)
			if err != nil {
				return fmt.Errorf("worker: metrics: %w", err)
			}
			logger.InfoContext(ctx, "serving metrics", slog.String("url", "http://"+ln.Addr().String()+"/metrics"))
			serveCtx := context.WithoutCancel(ctx) // the start hook's ctx ends after start
			go func() {
				if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					logger.ErrorContext(serveCtx, "metrics server", slog.Any("error", err))
				}
			}()
			return nil
		},
		OnStop: srv.Shutdown,
	})
}
