package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/worker"
)

// A mode is one way of running the same handler on the same tasks.
type mode int

const (
	// modeBare is asynq with no lock: the baseline, and in the flash sale
	// the mode that shows the lost updates.
	modeBare mode = iota
	// modeGuard is middleware.Guard alone: no recovery, tracing, archiving
	// or telemetry, with the guard's IsFailure and RetryDelay.
	modeGuard
	// modeChain is worker.New: recovery, tracing with the SDK, unknown-type
	// archiving and the guard, as the product runs them.
	modeChain
	// modeRedsync is the guard a team writes with redsync's defaults.
	modeRedsync
	// modeRedislock is the guard a team writes with bsm/redislock.
	modeRedislock
	// modeMutex is a probe, run only when named: a sync.Mutex per key in
	// the worker process, the least any lock can cost one process, and
	// so the floor of a hot key's figures. It is in no comparison.
	modeMutex
)

var modeNames = [...]string{"bare", "guard", "chain", "redsync", "redislock", "mutex"}

// defaultModes are the modes a run without -modes compares.
var defaultModes = modeNames[:modeMutex]

func (m mode) String() string { return modeNames[m] }

func parseModes(s string) ([]mode, error) {
	var ms []mode
	for name := range strings.SplitSeq(s, ",") {
		i := indexOf(modeNames[:], strings.TrimSpace(name))
		if i < 0 {
			return nil, fmt.Errorf("unknown mode %q (have %s)", name, strings.Join(modeNames[:], ","))
		}
		ms = append(ms, mode(i))
	}
	return ms, nil
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

// Peer guards: what a team writes without turnstile. Each takes a lock on
// the payload's resource key before the handler, releases it in a defer,
// and returns an error when the key stays busy, so that asynq retries the
// task with its DefaultRetryDelayFunc (15 s and more) and counts a failure.
const (
	// redislockBackoff and redislockBudget are the redislock guard's poll
	// interval and how long it polls before it gives up.
	redislockBackoff = 100 * time.Millisecond
	redislockBudget  = time.Second
)

// releaseErrors counts peer releases that failed; a peer guard has no
// better place to report them, and the bench prints the count.
var releaseErrors atomic.Int64

// redsyncGuard locks a redsync Mutex per resource with redsync's defaults:
// 8 s expiry, 32 tries 50-250 ms apart (about 4.8 s), then gives up.
func redsyncGuard(rs *redsync.Redsync) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			key, err := resourceKey(t)
			if err != nil {
				return err
			}
			m := rs.NewMutex(key)
			if err := m.LockContext(ctx); err != nil {
				return fmt.Errorf("redsync guard: lock %q: %w", key, err)
			}
			defer func() {
				// WithoutCancel: a cancelled task must still give its lock back.
				if ok, err := m.UnlockContext(context.WithoutCancel(ctx)); err != nil || !ok {
					releaseErrors.Add(1)
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}

// redislockGuard obtains a redislock lock per resource, polling every
// 100 ms for at most a second.
func redislockGuard(c *redislock.Client, ttl time.Duration) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			key, err := resourceKey(t)
			if err != nil {
				return err
			}
			octx, cancel := context.WithTimeout(ctx, redislockBudget)
			l, err := c.Obtain(octx, key, ttl, &redislock.Options{RetryStrategy: redislock.LinearBackoff(redislockBackoff)})
			cancel()
			if err != nil {
				return fmt.Errorf("redislock guard: obtain %q: %w", key, err)
			}
			defer func() {
				if err := l.Release(context.WithoutCancel(ctx)); err != nil {
					releaseErrors.Add(1)
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}

// mutexGuard holds a sync.Mutex per resource key around the handler.
func mutexGuard() asynq.MiddlewareFunc {
	var (
		mu    sync.Mutex
		locks = map[string]*sync.Mutex{}
	)
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			key, err := resourceKey(t)
			if err != nil {
				return err
			}
			mu.Lock()
			l := locks[key]
			if l == nil {
				l = new(sync.Mutex)
				locks[key] = l
			}
			mu.Unlock()
			l.Lock()
			defer l.Unlock()
			return next.ProcessTask(ctx, t)
		})
	}
}

// resourceKey is the key the peers lock: the string of the very resource
// the guard locks.
func resourceKey(t *asynq.Task) (string, error) {
	rs, err := keys(t)
	if err != nil {
		return "", fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return rs[0].String(), nil
}

// server is a started-on-demand asynq server in one mode.
type server struct {
	start    func() error
	shutdown func(context.Context) error
}

// asynqConfig is the server configuration every mode shares: the worker's
// poll intervals, one queue, the bench's concurrency.
func (b *bench) asynqConfig() asynq.Config {
	return asynq.Config{
		Concurrency: b.cfg.concurrency, Queues: map[string]int{"default": 1},
		TaskCheckInterval: worker.DefaultPollInterval, DelayedTaskCheckInterval: worker.DelayedTaskCheckInterval,
		ShutdownTimeout: shutdownTimeout, LogLevel: asynq.FatalLevel,
	}
}

// shutdownTimeout bounds how long a phase's server waits for running
// handlers, e.g. a peer still polling for the hot key after the phase.
const shutdownTimeout = 10 * time.Second

// newServer builds the server of mode m around h.
func (b *bench) newServer(m mode, h asynq.Handler) (server, error) {
	switch m {
	case modeChain:
		cfg := worker.DefaultConfig()
		cfg.Concurrency = b.cfg.concurrency
		cfg.Queues = map[string]int{"default": 1}
		cfg.ShutdownTimeout = shutdownTimeout
		w, err := worker.New(worker.Params{
			Config: cfg, Redis: b.rdb, Logger: slog.New(slog.DiscardHandler),
			TracerProvider: b.tel.TracerProvider(), MeterProvider: b.tel.MeterProvider(),
			TaskTypes: []worker.TaskType{{Type: taskType, Handler: h, Keys: keys, MaxRetry: maxRetry, Timeout: taskTimeout}},
		})
		if err != nil {
			return server{}, err
		}
		return server{w.Start, w.Shutdown}, nil
	case modeGuard:
		return b.guardServer(h)
	default:
	}
	srv := asynq.NewServerFromRedisClient(b.rdb, b.asynqConfig())
	mux := asynq.NewServeMux()
	switch m {
	case modeRedsync:
		mux.Use(redsyncGuard(redsync.New(goredis.NewPool(b.rdb))))
	case modeRedislock:
		mux.Use(redislockGuard(redislock.New(b.rdb), worker.DefaultLockTTL))
	case modeMutex:
		mux.Use(mutexGuard())
	default:
	}
	mux.Handle(taskType, h)
	return server{
		start:    func() error { return srv.Start(mux) },
		shutdown: func(context.Context) error { srv.Shutdown(); return nil },
	}, nil
}

// guardServer runs the guard as worker.New sets it up, without the other
// middlewares and without telemetry.
func (b *bench) guardServer(h asynq.Handler) (server, error) {
	locker, err := lock.New(b.rdb, lock.Config{TTL: worker.DefaultLockTTL})
	if err != nil {
		return server{}, err
	}
	guard := middleware.NewGuard(locker, b.rdb, middleware.GuardConfig{Queues: []string{"default"}, Concurrency: b.cfg.concurrency})
	if err := guard.Register(middleware.Rule{
		Type: taskType, Keys: keys, MaxRetry: maxRetry, Timeout: taskTimeout,
		TTL: worker.DefaultLockTTL, Wait: worker.DefaultLockWait,
	}); err != nil {
		return server{}, errors.Join(err, locker.Close())
	}
	cfg := b.asynqConfig()
	cfg.IsFailure = middleware.IsFailure
	cfg.RetryDelayFunc = guard.RetryDelay
	srv := asynq.NewServerFromRedisClient(b.rdb, cfg)
	mux := asynq.NewServeMux()
	mux.Use(guard.Middleware)
	mux.Handle(taskType, h)
	return server{
		start: func() error { return srv.Start(mux) },
		shutdown: func(ctx context.Context) error {
			srv.Shutdown()
			return errors.Join(guard.Shutdown(ctx), locker.Close())
		},
	}, nil
}
