package worker

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

// Issue 14: with TURNSTILE_LOCK_URLS the guard's locks live on three
// independent masters by majority while the jobs stay on their own Redis.
// One master killed mid-run: no two handlers hold a key at once and work
// goes on. A second killed: acquisitions fail, with an error that says
// so, and no task is lost.
func TestOptions_QuorumLocks(t *testing.T) {
	t.Parallel()
	jobs := redistest.Server(t)
	masters := []*redistest.Process{redistest.Server(t), redistest.Server(t), redistest.Server(t)}
	cfg := testConfig("redis://" + jobs.Addr())
	for _, m := range masters {
		cfg.LockURLs = append(cfg.LockURLs, "redis://"+m.Addr())
	}
	var inside, overlaps, done atomic.Int64
	var producer *Producer
	var inspector *asynq.Inspector
	app := fx.New(Options(cfg, slog.New(slog.DiscardHandler),
		ProvideTaskTypes(func() []TaskType {
			return []TaskType{guardedType(func(context.Context, *asynq.Task) error {
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				done.Add(1)
				return nil
			})}
		}),
		fx.Populate(&producer, &inspector)))
	require.NoError(t, app.Start(t.Context()))
	t.Cleanup(func() { require.NoError(t, app.Stop(context.Background())) })

	enqueue := func(n int) {
		for range n {
			_, err := producer.Enqueue(t.Context(), "test:item", []byte(`{"item":"hot"}`))
			require.NoError(t, err)
		}
	}
	enqueue(80)
	require.Eventually(t, func() bool { return done.Load() >= 20 }, 20*time.Second, 10*time.Millisecond)
	masters[0].Stop() // mid-run
	require.Eventually(t, func() bool { return done.Load() == 80 }, 30*time.Second, 10*time.Millisecond,
		"work stopped with one lock master of three down")
	require.Zero(t, overlaps.Load(), "two handlers held the key at once")
	held, err := masters[1].Client(t).Exists(t.Context(), "turnstile:lock:{item:hot}:fence").Result()
	require.NoError(t, err)
	require.Equal(t, int64(1), held, "the locks were not on the lock masters")
	jobKeys, err := jobs.Client(t).Keys(t.Context(), "turnstile:lock:{*}*").Result()
	require.NoError(t, err)
	require.Empty(t, jobKeys, "a lock lives on the jobs' Redis")

	// With two of three down no lock can be had: tasks fail and retry,
	// and none is lost.
	masters[1].Stop()
	enqueue(5)
	require.Eventually(t, func() bool {
		q, err := inspector.GetQueueInfo(DefaultQueue)
		return err == nil && q.Retry+q.Pending+q.Active+q.Scheduled == 5 && q.Retry > 0
	}, 30*time.Second, 50*time.Millisecond, "tasks without a lock quorum were not kept for retry")
	retry, err := inspector.ListRetryTasks(DefaultQueue)
	require.NoError(t, err)
	require.NotEmpty(t, retry)
	require.Contains(t, retry[0].LastErr, "lock", "the last error does not say the lock failed")
	require.Equal(t, int64(80), done.Load(), "a task ran without a lock quorum")
	require.Zero(t, overlaps.Load())
}
