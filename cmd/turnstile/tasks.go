package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

// taskTypes are the task types this binary enqueues: their checks and
// options, not their handlers.
func taskTypes() []worker.TaskType { return (&jobs.Service{}).TaskTypes() }

type shopIn struct {
	fx.In
	Lifecycle fx.Lifecycle
	Redis     redis.UniversalClient
	Client    *asynq.Client
	Telemetry *telemetry.Providers
	Logger    *slog.Logger
	// Observer, such as the admin server's tracker, also watches the
	// inventory locks when one is provided.
	Observer lock.Observer `optional:"true"`
	// History records the ledger's fenced reads and commits when
	// TURNSTILE_HISTORY_FILE is set (see recordHistory).
	History ledger.History `optional:"true"`
	// GatewayRedis holds the gateway simulator's books when
	// TURNSTILE_GATEWAY_REDIS_URL is set (see gatewayRedis); else Redis.
	GatewayRedis redis.UniversalClient `name:"gateway" optional:"true"`
	// SweepEvery is TURNSTILE_SWEEP_EVERY when set (see sweepPeriod);
	// else defaultSweepEvery.
	SweepEvery sweepEvery `optional:"true"`
}

// defaultSweepEvery is how often a worker sweeps (jobs.Service.SweepEvery)
// for reserved orders whose revoke was lost and for notifications left
// undelivered, and how long it waits for the scheduled revoke after a
// payment window first. A lost revoke costs at most the window plus two
// periods; a notification left undelivered waits at most max(period,
// 10 s) plus one period (jobs.Service.Sweep).
const defaultSweepEvery = time.Minute

// sweepEvery is a worker's sweep period, its own type for fx.
type sweepEvery time.Duration

// serveShop gives a worker the shop's jobs, over the ledger and the
// gateway simulator in the worker's own Redis (the simulator's in
// TURNSTILE_GATEWAY_REDIS_URL's when set), with a Locker for the
// inventory locks the jobs take inside; and the admin server its order
// routes, over the same Service and ledger (adminShop).
func serveShop() fx.Option {
	return fx.Options(
		fx.Provide(newShop),
		worker.ProvideTaskTypes((*jobs.Service).TaskTypes),
		fx.Provide(func(svc *jobs.Service, store *ledger.Store) *admin.Shop {
			return &admin.Shop{Checkout: svc, Ledger: store}
		}),
	)
}

// adminShop is the admin server's Shop: the one serveShop provides, or
// none (no order routes) for a worker that serves other task types.
type adminShop struct {
	fx.In
	Shop *admin.Shop `optional:"true"`
}

// newShop builds the shop's Service and its ledger (see serveShop).
func newShop(in shopIn) (*jobs.Service, *ledger.Store, error) {
	lc, rdb, tel := in.Lifecycle, in.Redis, in.Telemetry
	observer := telemetry.LockObserver(tel.TracerProvider(), tel.MeterProvider())
	if in.Observer != nil {
		observer = lock.Observers(observer, in.Observer)
	}
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second, Observer: observer})
	if err != nil {
		return nil, nil, err
	}
	lc.Append(fx.StopHook(locker.Close)) // after the worker's, which was appended later
	gw, err := gateway.NewSimulator(cmp.Or(in.GatewayRedis, rdb), gateway.Config{Latency: 20 * time.Millisecond})
	if err != nil {
		return nil, nil, err
	}
	store := ledger.New(rdb, "").WithHistory(in.History)
	svc := &jobs.Service{Store: store, Gateway: gw, Locker: locker, Client: in.Client, Logger: in.Logger}
	sweep, stopSweep := context.WithCancel(context.Background())
	var sweeping sync.WaitGroup
	every := cmp.Or(time.Duration(in.SweepEvery), defaultSweepEvery)
	lc.Append(fx.StartStopHook(
		func() { sweeping.Go(func() { svc.SweepEvery(sweep, every, every) }) },
		func() { stopSweep(); sweeping.Wait() },
	))
	return svc, store, nil
}

// envHistoryFile names the file that "turnstile worker" and "turnstile
// demo" append every fenced ledger read and commit to, as JSON lines, for
// the robustness suite's history check (internal/history). Workers may
// share one file. Empty: nothing is recorded.
const envHistoryFile = "TURNSTILE_HISTORY_FILE"

// historyAbout is the variable's line in a command's help.
const historyAbout = envHistoryFile + ", when set, names a file that every fenced ledger read and commit\nis appended to (JSON lines), for the robustness suite's history check."

// openHistory opens the file TURNSTILE_HISTORY_FILE names. With the
// variable unset it returns a nil History (the Store then records
// nothing) and a close that does nothing.
func openHistory(getenv func(string) string) (ledger.History, func() error, error) {
	path := getenv(envHistoryFile)
	if path == "" {
		return nil, func() error { return nil }, nil
	}
	rec, err := history.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", envHistoryFile, err)
	}
	return rec, rec.Close, nil
}

// recordHistory gives serveShop the History of TURNSTILE_HISTORY_FILE,
// closed when the app stops: after the worker, whose hook was appended
// later, so the last job's operations are in it.
func recordHistory(getenv func(string) string) fx.Option {
	if getenv(envHistoryFile) == "" {
		return fx.Options()
	}
	return fx.Provide(func(lc fx.Lifecycle, logger *slog.Logger) (ledger.History, error) {
		h, closeHistory, err := openHistory(getenv)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(closeHistory))
		logger.Info("recording fenced ledger operations", slog.String("file", getenv(envHistoryFile)))
		return h, nil
	})
}

// envSweepEvery names how often "turnstile worker" sweeps for lost
// revokes and undelivered notifications, as a Go duration. Empty: once a
// minute. The robustness suite wants a few seconds, so that what a
// killed worker left is swept within its runs.
const envSweepEvery = "TURNSTILE_SWEEP_EVERY"

// sweepAbout is the variable's line in a command's help.
const sweepAbout = envSweepEvery + ", when set, is how often the worker sweeps for lost revokes and\nundelivered notifications, as a Go duration (default 1m)."

// sweepPeriod gives serveShop the period of TURNSTILE_SWEEP_EVERY; a
// value that is not a positive duration fails the app's start.
func sweepPeriod(getenv func(string) string) fx.Option {
	v := strings.TrimSpace(getenv(envSweepEvery))
	if v == "" {
		return fx.Options()
	}
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		err = errors.New("not positive")
	}
	if err != nil {
		return fx.Error(fmt.Errorf("%s=%q: %w", envSweepEvery, v, err))
	}
	return fx.Supply(sweepEvery(d))
}

// envGatewayRedisURL names the Redis that the gateway simulator of
// "turnstile worker" keeps its books in. Empty: the worker's own. A real
// gateway's books are not the shop's: a crash or failover that takes
// writes back from the shop's Redis does not take back a capture. The
// robustness suite crashes the shop's Redis, so it gives the simulator a
// Redis of its own; the demo keeps it in memory, apart, for the same
// reason.
const envGatewayRedisURL = "TURNSTILE_GATEWAY_REDIS_URL"

// gatewayAbout is the variable's line in a command's help.
const gatewayAbout = envGatewayRedisURL + ", when set, is the Redis URL of the payment gateway simulator's\nbooks (default: the worker's Redis)."

// gatewayRedis gives serveShop the client of TURNSTILE_GATEWAY_REDIS_URL,
// closed when the app stops.
func gatewayRedis(getenv func(string) string) fx.Option {
	url := getenv(envGatewayRedisURL)
	if url == "" {
		return fx.Options()
	}
	return fx.Provide(fx.Annotate(func(lc fx.Lifecycle, logger *slog.Logger) (redis.UniversalClient, error) {
		cfg := worker.DefaultConfig()
		cfg.RedisURL = url
		rdb, closeRedis, err := worker.OpenRedis(context.Background(), cfg, logger)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envGatewayRedisURL, err)
		}
		lc.Append(fx.StopHook(closeRedis))
		return rdb, nil
	}, fx.ResultTags(`name:"gateway"`)))
}
