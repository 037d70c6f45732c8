package worker

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

type itemPayload struct {
	Item string `json:"item"`
}

func itemKeys(t *asynq.Task) ([]lock.Resource, error) {
	var p itemPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return nil, &middleware.PayloadError{Field: "(body)", Problem: err.Error()}
	}
	if p.Item == "" {
		return nil, &middleware.PayloadError{Field: "item", Problem: "missing"}
	}
	return []lock.Resource{lock.Key("item", p.Item)}, nil
}

func testConfig(redisURL string) Config {
	cfg := DefaultConfig()
	cfg.RedisURL = redisURL
	cfg.Concurrency = 4
	cfg.Queues = map[string]int{"default": 1}
	cfg.PollInterval = 10 * time.Millisecond
	cfg.ShutdownTimeout = time.Second
	return cfg
}

func guardedType(h asynq.HandlerFunc) TaskType {
	return TaskType{Type: "test:item", Handler: h, Keys: itemKeys, Timeout: 5 * time.Second}
}

func TestOptions_StartAndStopOnEmbeddedRedis(t *testing.T) {
	t.Parallel()
	opts := Options(testConfig(""), slog.New(slog.DiscardHandler),
		ProvideTaskTypes(func() []TaskType {
			return []TaskType{guardedType(func(context.Context, *asynq.Task) error { return nil })}
		}))
	require.NoError(t, fx.ValidateApp(opts))
	app := fx.New(opts)
	require.NoError(t, app.Err())
	require.NoError(t, app.Start(t.Context()))
	require.NoError(t, app.Stop(t.Context()))
}

func TestOptions_RunsGuardedTasks(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	var done, withLease atomic.Int64
	var producer *Producer
	cfg := testConfig("redis://" + srv.Addr())
	cfg.MetricsAddr = freeAddr(t)
	app := fx.New(Options(cfg, slog.New(slog.DiscardHandler),
		ProvideTaskTypes(func() []TaskType {
			return []TaskType{guardedType(func(ctx context.Context, _ *asynq.Task) error {
				if middleware.Lease(ctx) != nil {
					withLease.Add(1)
				}
				done.Add(1)
				return nil
			})}
		}),
		fx.Populate(&producer)))
	require.NoError(t, app.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, app.Stop(context.Background())) })

	const n = 20
	for i := range n {
		info, err := producer.Enqueue(t.Context(), "test:item", []byte(`{"item":"`+string(rune('a'+i%2))+`"}`))
		require.NoError(t, err)
		require.Equal(t, DefaultQueue, info.Queue)
		require.Equal(t, DefaultMaxRetry, info.MaxRetry)
	}
	require.Eventually(t, func() bool { return done.Load() == n }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, int64(n), withLease.Load(), "a guarded handler ran without its lease")
	metrics := get(t, "http://"+cfg.MetricsAddr+"/metrics")
	require.Contains(t, metrics, `turnstile_lock_acquisitions_total{`)
	require.Contains(t, metrics, `turnstile_task_type="test:item"`)
	require.Contains(t, metrics, `asynq_tasks_processed_total{queue="default"}`, "asynq's queue metrics")
	require.NotContains(t, metrics, `item:a`, "a raw lock key in a label")

	_, err := producer.Enqueue(t.Context(), "test:item", []byte(`{}`))
	var perr *middleware.PayloadError
	require.ErrorAs(t, err, &perr, "the producer checks payloads as the worker does")
	require.Equal(t, "item", perr.Field)
	_, err = producer.Enqueue(t.Context(), "test:nope", nil)
	require.ErrorIs(t, err, ErrUnknownType)
}

// On shutdown, asynq gives running tasks ShutdownTimeout and then puts them
// back in their queue; the guard then cancels the abandoned handlers and
// waits for them, so no lock outlives the worker.
func TestOptions_ShutdownReleasesLocks(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	started := make(chan struct{}, 1)
	var cancelled atomic.Bool
	var producer *Producer
	app := fx.New(Options(testConfig("redis://"+srv.Addr()), slog.New(slog.DiscardHandler),
		ProvideTaskTypes(func() []TaskType {
			return []TaskType{guardedType(func(ctx context.Context, _ *asynq.Task) error {
				started <- struct{}{}
				<-ctx.Done()
				cancelled.Store(true)
				return ctx.Err()
			})}
		}),
		fx.Populate(&producer)))
	require.NoError(t, app.Start(t.Context()))
	info, err := producer.Enqueue(t.Context(), "test:item", []byte(`{"item":"held"}`))
	require.NoError(t, err)
	<-started

	require.NoError(t, app.Stop(t.Context()))
	require.True(t, cancelled.Load(), "the handler was not cancelled")
	rdb := srv.Client(t)
	require.Zero(t, rdb.Exists(t.Context(), lock.DefaultPrefix+"{item:held}").Val(), "the lock outlived the worker")
	ti, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("default", info.ID)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, ti.State, "asynq puts an unfinished task back")
}

func TestNew_RefusesBadTaskTypes(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	ok := func(context.Context, *asynq.Task) error { return nil }
	for name, types := range map[string][]TaskType{
		"NoType":       {{Handler: asynq.HandlerFunc(ok)}},
		"NoHandler":    {{Type: "x"}},
		"Twice":        {guardedType(ok), guardedType(ok)},
		"ShortTimeout": {{Type: "x", Handler: asynq.HandlerFunc(ok), Keys: itemKeys, Timeout: 500 * time.Millisecond}},
	} {
		_, err := New(Params{Config: testConfig(""), Redis: rdb, TaskTypes: types})
		require.Error(t, err, name)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
