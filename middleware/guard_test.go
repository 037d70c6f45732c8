package middleware_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/oteltest"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
)

const guardedType = "test:guarded"

type payload struct {
	Key string `json:"key"`
}

func keysOf(t *asynq.Task) ([]lock.Resource, error) {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return nil, &middleware.PayloadError{Field: "(body)", Problem: err.Error()}
	}
	if p.Key == "" {
		return nil, &middleware.PayloadError{Field: "key", Problem: "missing"}
	}
	return []lock.Resource{lock.Key("thing", p.Key)}, nil
}

// worker is an asynq server on a real redis-server, behind Recover,
// ArchiveUnknown and the guard, with handler as the guarded type's handler.
type worker struct {
	rdb     redis.UniversalClient
	client  *asynq.Client
	inspect *asynq.Inspector
	guard   *middleware.Guard
	queue   string // the first queue it serves, where enqueue puts tasks
}

// backend is the Redis a worker runs on.
type backend struct {
	name    string
	mini    bool // miniredis, whose keys expire only when told to
	cluster bool // a real 3-master Redis Cluster
}

// backends are the Redis servers every worker test runs on.
var backends = []backend{{name: "Redis"}, {name: "Miniredis", mini: true}}

// withCluster adds a real 3-master Redis Cluster to backends, for the
// tests of what crosses slots: a release in one slot waking a task
// parked in a queue's slot on another master.
var withCluster = append(slices.Clip(backends), backend{name: "Cluster", cluster: true})

// workerSetup is what a test may change about a worker.
type workerSetup struct {
	rule middleware.Rule
	// rec, when set, receives the spans and metrics of Tracing, the lock
	// observer and the guard.
	rec *oteltest.Recorder
	// hook, when set, sees every command the worker sends.
	hook redis.Hook
	// queues are the queues the worker serves (default "default").
	queues []string
	// rdb, when set, is the Redis to run on, shared with another worker;
	// by default each worker has its own.
	rdb redis.UniversalClient
}

func startWorker(t *testing.T, be backend, concurrency int, handler asynq.HandlerFunc, adjust ...func(*workerSetup)) *worker {
	t.Helper()
	ws := workerSetup{rule: middleware.Rule{
		Type: guardedType, Keys: keysOf, MaxRetry: 3, Timeout: 10 * time.Second, TTL: 5 * time.Second,
	}, queues: []string{"default"}}
	for _, f := range adjust {
		f(&ws)
	}
	rdb := ws.rdb
	switch {
	case rdb != nil:
	case be.mini:
		_, rdb = redistest.MiniClient(t)
		redistest.CheckSlots(t, rdb)
	case be.cluster:
		rdb = redistest.Cluster(t, 3, 0).Client(t)
	default:
		rdb = redistest.Server(t).Client(t)
		// Every script the worker runs, asynq's, the lock's and the
		// guard's, must run unchanged on Redis Cluster.
		redistest.CheckSlots(t, rdb)
	}
	if ws.hook != nil {
		rdb.(interface{ AddHook(redis.Hook) }).AddHook(ws.hook)
	}
	lockCfg := lock.Config{}
	var metrics *telemetry.Metrics
	if ws.rec != nil {
		lockCfg.Observer = telemetry.LockObserver(ws.rec.TP, ws.rec.MP)
		metrics = telemetry.NewMetrics(ws.rec.MP)
	}
	locker, err := lock.New(rdb, lockCfg)
	require.NoError(t, err)
	guard := middleware.NewGuard(locker, rdb, middleware.GuardConfig{
		Queues:      ws.queues,
		SafetyNet:   time.Hour, // only wake-ups may bring a parked task back
		Concurrency: concurrency,
		Metrics:     metrics,
	})
	require.NoError(t, guard.Register(ws.rule))
	queues := make(map[string]int)
	for _, q := range ws.queues {
		queues[q] = 1
	}
	server := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              concurrency,
		Queues:                   queues,
		IsFailure:                middleware.IsFailure,
		RetryDelayFunc:           guard.RetryDelay,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		// An idle server polls its queues this often: it bounds how soon a
		// woken task runs.
		TaskCheckInterval: 20 * time.Millisecond,
		ShutdownTimeout:   5 * time.Second,
		LogLevel:          asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Use(middleware.Recover(slog.New(slog.DiscardHandler)))
	if ws.rec != nil {
		mux.Use(middleware.Tracing(ws.rec.TP, ws.rec.MP))
	}
	mux.Use(middleware.ArchiveUnknown, guard.Middleware)
	mux.Handle(guardedType, handler)
	require.NoError(t, server.Start(mux))
	t.Cleanup(func() {
		server.Shutdown()
		require.NoError(t, guard.Shutdown(context.Background()))
		require.NoError(t, locker.Close())
	})
	return &worker{
		rdb: rdb, guard: guard, queue: ws.queues[0],
		client:  asynq.NewClientFromRedisClient(rdb),
		inspect: asynq.NewInspectorFromRedisClient(rdb),
	}
}

// enqueue enqueues a guarded task on key; opts override the defaults.
func (w *worker) enqueue(t *testing.T, key string, opts ...asynq.Option) *asynq.TaskInfo {
	t.Helper()
	b, err := json.Marshal(payload{Key: key})
	require.NoError(t, err)
	opts = append([]asynq.Option{
		asynq.Queue(w.queue), asynq.MaxRetry(3), asynq.Timeout(10 * time.Second), asynq.Retention(time.Hour),
	}, opts...)
	info, err := w.client.Enqueue(asynq.NewTask(guardedType, b), opts...)
	require.NoError(t, err)
	return info
}

// waitState waits until task id is in state and returns its info.
func (w *worker) waitState(t *testing.T, id string, state asynq.TaskState, what string) *asynq.TaskInfo {
	t.Helper()
	var ti *asynq.TaskInfo
	waitFor(t, 10*time.Second, func() bool {
		var err error
		ti, err = w.inspect.GetTaskInfo(w.queue, id)
		return err == nil && ti.State == state
	}, what)
	return ti
}

// overlaps detects two handlers inside the same resource at once.
type overlaps struct {
	inside, seen atomic.Int64
	done         atomic.Int64
}

func (o *overlaps) hold(d time.Duration) {
	if o.inside.Add(1) > 1 {
		o.seen.Add(1)
	}
	time.Sleep(d)
	o.inside.Add(-1)
	o.done.Add(1)
}

func waitFor(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGuard_OneKeyNeverOverlaps(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var o overlaps
			w := startWorker(t, be, 16, func(ctx context.Context, _ *asynq.Task) error {
				require.NotNil(t, middleware.Lease(ctx), "no lease in the handler's context")
				o.hold(time.Millisecond)
				return nil
			})
			const n = 200
			for range n {
				w.enqueue(t, "hot")
			}
			waitFor(t, 60*time.Second, func() bool { return o.done.Load() == n }, "not every task ran")
			require.Zero(t, o.seen.Load(), "two handlers held the key at once")

			waitFor(t, 5*time.Second, func() bool {
				q, err := w.inspect.GetQueueInfo("default")
				return err == nil && q.Completed == n
			}, "not every task completed")
			done, err := w.inspect.ListCompletedTasks("default", asynq.PageSize(n))
			require.NoError(t, err)
			for _, ti := range done {
				require.Zero(t, ti.Retried, "a busy round counted as a failure: %s", ti.LastErr)
			}
		})
	}
}

func TestGuard_ParkedTasksAreWokenByReleases(t *testing.T) {
	t.Parallel()
	for _, be := range withCluster {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var o overlaps
			var cold atomic.Int64
			lists := &parkedLists{}
			block := newBlocker()
			w := startWorker(t, be, 8, func(_ context.Context, task *asynq.Task) error {
				if strings.Contains(string(task.Payload()), "hot") {
					block.first()
					o.hold(2 * time.Millisecond)
				} else {
					time.Sleep(2 * time.Millisecond)
					cold.Add(1)
				}
				return nil
			}, func(ws *workerSetup) { ws.hook = lists })
			// The first hot task holds the key until the others are
			// parked. Three cold tasks for each hot one: the hot key's
			// share of the worker gets it two waiting slots.
			const n = 50
			w.enqueue(t, "hot")
			<-block.holding
			for i := range n - 1 {
				w.enqueue(t, "hot")
				for j := range 3 {
					w.enqueue(t, fmt.Sprint("cold-", i, "-", j))
				}
			}
			waitFor(t, 30*time.Second, func() bool { return cold.Load() == 3*(n-1) }, "cold tasks stuck behind the hot key")
			require.Positive(t, lists.n.Load(), "no task parked")
			close(block.release)
			// The safety net is an hour: only releases can bring parked tasks back.
			waitFor(t, 60*time.Second, func() bool { return o.done.Load() == n }, "parked tasks were not woken")
			require.Zero(t, o.seen.Load())
		})
	}
}

// A worker that sees nothing but one key's tasks has nothing else for its
// slots to do: they wait in line, where the lease passes in-process,
// instead of parking to dequeue yet another task of the key.
func TestGuard_AKeyAloneWaitsInsteadOfParking(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var o overlaps
			lists := &parkedLists{}
			w := startWorker(t, be, 8, func(context.Context, *asynq.Task) error {
				o.hold(2 * time.Millisecond)
				return nil
			}, func(ws *workerSetup) { ws.hook = lists })
			const n = 100
			for range n {
				w.enqueue(t, "hot")
			}
			waitFor(t, 60*time.Second, func() bool { return o.done.Load() == n }, "not every task ran")
			require.Zero(t, o.seen.Load())
			require.Zero(t, lists.n.Load(), "a task of the only key in the worker parked")
		})
	}
}

// parkedLists counts the commands, alone or pipelined, that touch a
// parked list: the park and wake scripts.
type parkedLists struct{ n atomic.Int64 }

func (*parkedLists) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *parkedLists) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.count(cmd)
		return next(ctx, cmd)
	}
}

func (p *parkedLists) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			p.count(c)
		}
		return next(ctx, cmds)
	}
}

func (p *parkedLists) count(cmd redis.Cmder) {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, ":turnstile:parked:") {
			p.n.Add(1)
			return
		}
	}
}

func TestGuard_UncontendedReleasesWakeNobody(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var done atomic.Int64
			lists := &parkedLists{}
			block := newBlocker()
			w := startWorker(t, be, 8, func(_ context.Context, task *asynq.Task) error {
				if strings.Contains(string(task.Payload()), "hot") {
					block.first()
				}
				time.Sleep(2 * time.Millisecond)
				done.Add(1)
				return nil
			}, func(ws *workerSetup) { ws.hook = lists })
			const n = 50
			for i := range n {
				w.enqueue(t, fmt.Sprint("own-", i))
			}
			waitFor(t, 30*time.Second, func() bool { return done.Load() == n }, "not every task ran")
			require.Zero(t, lists.n.Load(), "a task on a free key parked or woke a parked list")

			// A contended key still parks and wakes, and its tasks all run:
			// its first task holds it while the rest come, three tasks of
			// other keys for each, which leaves it two waiting slots.
			w.enqueue(t, "hot")
			<-block.holding
			for i := range 20 {
				w.enqueue(t, "hot")
				for j := range 3 {
					w.enqueue(t, fmt.Sprint("other-", i, "-", j))
				}
			}
			waitFor(t, 30*time.Second, func() bool { return done.Load() == n+60 }, "other keys' tasks stuck behind the hot key")
			require.Positive(t, lists.n.Load(), "20 tasks on one key beside 60 others at concurrency 8 never parked")
			close(block.release)
			waitFor(t, 30*time.Second, func() bool { return done.Load() == n+81 }, "parked tasks were not woken")
		})
	}
}

func TestGuard_BadPayloadIsArchived(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var ran atomic.Bool
			w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
				ran.Store(true)
				return nil
			})
			_, err := w.client.Enqueue(asynq.NewTask(guardedType, []byte(`{"key":""}`)), asynq.MaxRetry(3))
			require.NoError(t, err)
			var archived []*asynq.TaskInfo
			waitFor(t, 10*time.Second, func() bool {
				archived, err = w.inspect.ListArchivedTasks("default")
				return err == nil && len(archived) == 1
			}, "bad payload not archived")
			require.Contains(t, archived[0].LastErr, guardedType)
			require.Contains(t, archived[0].LastErr, "field key: missing")
			require.False(t, ran.Load(), "the handler ran on a bad payload")
			keys, err := w.rdb.Keys(context.Background(), lock.DefaultPrefix+"*").Result()
			require.NoError(t, err)
			for _, k := range keys {
				require.NotContains(t, k, "}:", "only fence/queue keys may remain")
			}
		})
	}
}

func TestGuard_PanicReleasesTheLock(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
				if calls.Add(1) == 1 {
					panic("boom")
				}
				return nil
			})
			w.enqueue(t, "p")
			waitFor(t, 10*time.Second, func() bool { return calls.Load() >= 1 }, "handler never ran")
			waitFor(t, 5*time.Second, func() bool {
				return w.rdb.Exists(context.Background(), lock.DefaultPrefix+"{thing:p}").Val() == 0
			}, "the panicking task kept its lock")
		})
	}
}

func TestGuard_AfterReleaseRunsWithoutTheLock(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu     sync.Mutex
				exists int64 = -1
			)
			var w *worker
			w = startWorker(t, be, 2, func(ctx context.Context, _ *asynq.Task) error {
				middleware.AfterRelease(ctx, func(ctx context.Context) {
					mu.Lock()
					defer mu.Unlock()
					exists = w.rdb.Exists(ctx, lock.DefaultPrefix+"{thing:a}").Val()
				})
				return nil
			})
			w.enqueue(t, "a")
			waitFor(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return exists >= 0 }, "after-release work never ran")
			mu.Lock()
			defer mu.Unlock()
			require.Zero(t, exists, "after-release work ran while the lock was held")
		})
	}
}

func TestGuard_LeaseLossCancelsTheHandler(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			cause := make(chan error, 1)
			var w *worker
			w = startWorker(t, be, 2, func(ctx context.Context, _ *asynq.Task) error {
				// Another owner takes the lock from under us; the refresher or the
				// TTL timer notices and the context ends.
				w.rdb.Set(ctx, lock.DefaultPrefix+"{thing:l}", "thief", time.Minute)
				_ = middleware.Lease(ctx).Extend(ctx, 0)
				<-ctx.Done()
				cause <- context.Cause(ctx)
				return nil
			})
			w.enqueue(t, "l")
			select {
			case err := <-cause:
				require.ErrorIs(t, err, middleware.ErrLeaseLost)
			case <-time.After(10 * time.Second):
				t.Fatal("lease loss did not cancel the handler")
			}
		})
	}
}

func TestGuard_RegisterRefusesUnsafeRules(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	locker, err := lock.New(rdb, lock.Config{})
	require.NoError(t, err)
	g := middleware.NewGuard(locker, rdb, middleware.GuardConfig{Queues: []string{"default"}})
	require.Error(t, g.Register(middleware.Rule{Type: "x", Keys: keysOf, MaxRetry: 0, Timeout: time.Minute}))
	require.Error(t, g.Register(middleware.Rule{Type: "x", Keys: keysOf, MaxRetry: 1, Timeout: 500 * time.Millisecond}))
	require.NoError(t, g.Register(middleware.Rule{Type: "x", Keys: keysOf, MaxRetry: 1, Timeout: time.Minute}))
	require.Error(t, g.Register(middleware.Rule{Type: "x", Keys: keysOf, MaxRetry: 1, Timeout: time.Minute}), "registered twice")
}

// A key whose waiters run out of their budget in line is held too long to
// be worth every slot: its later tasks park at once instead of each
// sitting in a slot for a whole budget.
func TestGuard_AStalledKeyParksInsteadOfWaiting(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			block := newBlocker()
			w := startWorker(t, be, 8, func(context.Context, *asynq.Task) error {
				block.first()
				return nil
			}, func(ws *workerSetup) { ws.rule.Wait = time.Second })
			defer close(block.release)
			w.enqueue(t, "hot")
			<-block.holding
			const n = 40
			for range n {
				w.enqueue(t, "hot")
			}
			// The first 7 wait a second and park; without the rule, each
			// later batch of 7 would too: 6 s in all.
			waitFor(t, 4*time.Second, func() bool {
				q, err := w.inspect.GetQueueInfo("default")
				return err == nil && q.Retry >= n-2
			}, "the tasks of a stalled key kept waiting in line")
		})
	}
}

// blocker holds the first task that calls first until release is closed.
type blocker struct {
	once             sync.Once
	holding, release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{holding: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) first() {
	b.once.Do(func() {
		close(b.holding)
		<-b.release
	})
}
