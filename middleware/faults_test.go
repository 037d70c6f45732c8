package middleware_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/lock"
)

// asynq gives up on a handler at its timeout and may run the next task on
// the resource while the first handler still runs. The guard keeps the
// abandoned handler's lease until it returns, so the two never overlap.
func TestGuard_AbandonedHandlerKeepsItsLock(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			var (
				o    overlaps
				seen sync.Map
			)
			w := startWorker(t, be, 4, func(ctx context.Context, _ *asynq.Task) error {
				id, _ := asynq.GetTaskID(ctx)
				if _, again := seen.LoadOrStore(id, true); again {
					return nil // asynq's retry of an abandoned run
				}
				o.hold(1500 * time.Millisecond) // ignores ctx, which ends after 1 s
				return ctx.Err()
			}, func(ws *workerSetup) {
				// Without the refresh the guard keeps up, the lock would expire
				// 1 s into each run.
				ws.rule.Timeout, ws.rule.TTL, ws.rule.Wait = time.Second, time.Second, 100*time.Millisecond
			})
			first := w.enqueue(t, "slow", asynq.Timeout(time.Second))
			w.waitState(t, first.ID, asynq.TaskStateRetry, "asynq did not give up on the slow handler")
			// The handler still runs; had its lease not been refreshed, the lock
			// would be free by now.
			require.Equal(t, int64(1), o.inside.Load())
			time.Sleep(100 * time.Millisecond)
			for range 2 {
				w.enqueue(t, "slow", asynq.Timeout(time.Second))
			}
			waitFor(t, 30*time.Second, func() bool { return o.done.Load() == 3 }, "the slow handlers did not all run")
			require.Zero(t, o.seen.Load(), "an abandoned handler overlapped the next one")
		})
	}
}

// A key held by someone else for good archives its task after MaxBusy
// rounds, with a reason that names the key's kind and the holder; busy
// rounds never count as retries.
func TestGuard_BusyTooOftenIsArchived(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
				t.Error("the handler ran while the key was held")
				return nil
			}, func(ws *workerSetup) { ws.rule.MaxBusy, ws.rule.Wait = 2, 10*time.Millisecond })
			other, err := lock.New(w.rdb, lock.Config{TTL: time.Minute})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, other.Close()) })
			cron, err := other.With(lock.Options{TTL: time.Minute, Owner: "billing-cron"})
			require.NoError(t, err)
			held, err := cron.Acquire(t.Context(), lock.Key("thing", "stuck"))
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, held.Release(context.Background())) })

			info := w.enqueue(t, "stuck")
			ti := w.waitState(t, info.ID, asynq.TaskStateRetry, "the task was not parked")
			require.Zero(t, ti.Retried, "a busy round counted as a retry")
			require.Contains(t, ti.LastErr, "thing lock busy")
			require.Contains(t, ti.LastErr, "held by billing-cron")
			// Its safety net is an hour; an operator's "run now" brings it back.
			require.NoError(t, w.inspect.RunTask("default", info.ID))
			ti = w.waitState(t, info.ID, asynq.TaskStateArchived, "the task was not archived after MaxBusy rounds")
			require.Contains(t, ti.LastErr, "busy 2 times")
			require.Contains(t, ti.LastErr, "held by billing-cron")

			// An operator runs the archived task again: its count starts over,
			// so the key still being busy parks it, and it is not archived at
			// once.
			require.NoError(t, w.inspect.RunTask("default", info.ID))
			waitFor(t, 10*time.Second, func() bool {
				ti, err = w.inspect.GetTaskInfo("default", info.ID)
				return err == nil && (ti.State == asynq.TaskStateRetry || ti.State == asynq.TaskStateArchived) &&
					!strings.Contains(ti.LastErr, "busy 2 times")
			}, "the re-run task had no busy round")
			require.Equal(t, asynq.TaskStateRetry, ti.State, "archived again at once: %s", ti.LastErr)
			require.Contains(t, ti.LastErr, "busy round 1")
		})
	}
}

func TestGuard_UnknownTypeIsArchived(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error { return nil })
			info, err := w.client.Enqueue(asynq.NewTask("test:nobody-handles-me", nil), asynq.MaxRetry(25))
			require.NoError(t, err)
			ti := w.waitState(t, info.ID, asynq.TaskStateArchived, "the unknown task was not archived")
			require.Contains(t, ti.LastErr, `"test:nobody-handles-me"`)
			require.Contains(t, ti.LastErr, "no handler is registered")
			require.Zero(t, ti.Retried)
		})
	}
}
