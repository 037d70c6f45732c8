package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
)

// DelayedTaskCheckInterval is how often asynq moves due retries and
// scheduled tasks to their queues. asynq's default, 5 s, would hold a
// parked task whose wake-up was lost, or a retry, that much longer; the
// cost is one short script per queue four times a second.
const DelayedTaskCheckInterval = 250 * time.Millisecond

// Params are what a Worker is built from.
type Params struct {
	Config Config
	// Redis is the client of asynq, and of the locks unless LockRedis is
	// set.
	Redis redis.UniversalClient
	// LockRedis, when set, are three or more independent masters the
	// locks live on by majority (lock.NewQuorum); see Config.LockURLs
	// and OpenLockRedis.
	LockRedis []redis.UniversalClient
	TaskTypes []TaskType
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Logger         *slog.Logger
	// RetryDelay is the delay before retrying a failed task (default
	// asynq's, which starts at 15 s and grows).
	RetryDelay asynq.RetryDelayFunc
	// LockObserver, when set, is told about the worker's lock events as
	// well as telemetry, e.g. an admin.Tracker.
	LockObserver lock.Observer
}

// A Worker is an asynq server whose task types run behind panic recovery,
// tracing, the archiving of unknown types and the lock guard.
type Worker struct {
	srv    *asynq.Server
	mux    *asynq.ServeMux
	guard  *middleware.Guard
	locker *lock.Locker
	log    *slog.Logger
}

// New builds a Worker. It fails on a bad Config or a task type the guard
// refuses (see middleware.Guard.Register).
func New(p Params) (*Worker, error) {
	if err := p.Config.Validate(); err != nil {
		return nil, err
	}
	cfg, log := p.Config, p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tp, mp := p.TracerProvider, p.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	types, err := indexTypes(p.TaskTypes, true)
	if err != nil {
		return nil, err
	}
	observer := telemetry.LockObserver(tp, mp)
	if p.LockObserver != nil {
		observer = lock.Observers(observer, p.LockObserver)
	}
	lockCfg := lock.Config{TTL: cfg.LockTTL, Observer: observer}
	var locker *lock.Locker
	if len(p.LockRedis) > 0 {
		locker, err = lock.NewQuorum(p.LockRedis, lockCfg)
	} else {
		locker, err = lock.New(p.Redis, lockCfg)
	}
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	queues := slices.Sorted(maps.Keys(cfg.Queues))
	guard := middleware.NewGuard(locker, p.Redis, middleware.GuardConfig{
		Queues:      queues,
		Concurrency: cfg.Concurrency,
		RetryDelay:  p.RetryDelay,
		Metrics:     telemetry.NewMetrics(mp),
		Logger:      log,
	})
	mux := asynq.NewServeMux()
	mux.Use(middleware.Recover(log), middleware.Tracing(tp, mp), middleware.ArchiveUnknown, guard.Middleware)
	for _, typ := range slices.Sorted(maps.Keys(types)) {
		tt := types[typ]
		if tt.Keys != nil {
			wait := cfg.LockWait
			if wait == 0 {
				wait = -1 // the guard's "never wait"
			}
			if err := guard.Register(middleware.Rule{
				Type: tt.Type, Keys: tt.Keys, MaxRetry: tt.MaxRetry, Timeout: tt.Timeout,
				TTL: cmp.Or(tt.LockTTL, cfg.LockTTL), Wait: wait,
			}); err != nil {
				return nil, errors.Join(err, locker.Close())
			}
		}
		if _, served := cfg.Queues[tt.Queue]; !served {
			log.Warn("task type's queue is not served by this worker", slog.String("task_type", tt.Type), slog.String("queue", tt.Queue))
		}
		mux.Handle(tt.Type, tt.checked())
	}
	srv := asynq.NewServerFromRedisClient(p.Redis, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   cfg.Queues,
		IsFailure:                middleware.IsFailure,
		RetryDelayFunc:           guard.RetryDelay,
		ErrorHandler:             errorHandler(log),
		ShutdownTimeout:          cfg.ShutdownTimeout,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: DelayedTaskCheckInterval,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynqLevel(cfg.LogLevel),
	})
	return &Worker{srv: srv, mux: mux, guard: guard, locker: locker, log: log}, nil
}

// Start starts processing tasks.
func (w *Worker) Start() error {
	if err := w.srv.Start(w.mux); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks, gives running ones Config.ShutdownTimeout to
// finish (asynq puts the rest back in their queues), then waits until ctx
// ends for handlers asynq abandoned, so that every lease is released
// before the caller closes Redis.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.srv.Shutdown()
	return errors.Join(w.guard.Shutdown(ctx), w.locker.Close())
}

// Locker is the worker's Locker, for code that takes locks outside tasks.
func (w *Worker) Locker() *lock.Locker { return w.locker }

// errorHandler logs task failures. Busy rounds and tasks turned away by a
// shutdown are flow control and are not logged; asynq keeps their reason
// as the task's last error.
func errorHandler(log *slog.Logger) asynq.ErrorHandlerFunc {
	return func(ctx context.Context, t *asynq.Task, err error) {
		if !middleware.IsFailure(err) {
			return
		}
		id, _ := asynq.GetTaskID(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		log.WarnContext(ctx, "task failed", slog.String("task_type", t.Type()), slog.String("task_id", id),
			slog.Int("retried", retried), slog.Int("max_retry", maxRetry), slog.Any("error", err))
	}
}

// asynqLogger sends asynq's own log lines to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) emit(level slog.Level, args []any) {
	l.log.Log(context.Background(), level, "asynq", slog.String("detail", fmt.Sprint(args...)))
}

func (l asynqLogger) Debug(args ...any) { l.emit(slog.LevelDebug, args) }
func (l asynqLogger) Info(args ...any)  { l.emit(slog.LevelInfo, args) }
func (l asynqLogger) Warn(args ...any)  { l.emit(slog.LevelWarn, args) }
func (l asynqLogger) Error(args ...any) { l.emit(slog.LevelError, args) }

// Fatal is asynq's "cannot go on": it expects the process to exit.
func (l asynqLogger) Fatal(args ...any) {
	l.emit(slog.LevelError, args)
	os.Exit(1)
}

func asynqLevel(l slog.Level) asynq.LogLevel {
	switch {
	case l <= slog.LevelDebug:
		return asynq.DebugLevel
	case l <= slog.LevelInfo:
		return asynq.InfoLevel
	case l <= slog.LevelWarn:
		return asynq.WarnLevel
	default:
		return asynq.ErrorLevel
	}
}
