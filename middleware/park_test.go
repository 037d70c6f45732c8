package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/lock"
)

// holdKey takes key on w's Redis for ttl from a Locker of its own, as
// another process would, and never gives it back before cleanup.
func holdKey(t *testing.T, w *worker, key string, ttl time.Duration) *lock.Lease {
	t.Helper()
	other, err := lock.New(w.rdb, lock.Config{TTL: ttl})
	require.NoError(t, err)
	cron, err := other.With(lock.Options{TTL: ttl, Owner: "billing-cron"})
	require.NoError(t, err)
	held, err := cron.Acquire(t.Context(), lock.Key("thing", key))
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := held.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
			require.NoError(t, err)
		}
		require.NoError(t, other.Close())
	})
	return held
}

// payment:confirm runs in critical, refunds and revokes in default: a task
// parked in a queue the releasing worker does not serve must still be
// woken by its release, within a poll or two, not at its retry delay.
func TestGuard_ReleaseWakesParkedTasksInOtherQueues(t *testing.T) {
	t.Parallel()
	for _, be := range withCluster {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			started, hold := make(chan struct{}), make(chan struct{})
			// A 30 s lock: a parked task's own retry comes after it, so only
			// a wake-up can run it within the test's bound.
			rule := func(ws *workerSetup) { ws.rule.TTL, ws.rule.Wait = 30*time.Second, -1 }
			critical := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
				close(started)
				<-hold
				return nil
			}, rule, func(ws *workerSetup) { ws.queues = []string{"critical"} })
			var ranAt atomic.Int64
			dflt := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
				ranAt.Store(time.Now().UnixNano())
				return nil
			}, rule, func(ws *workerSetup) { ws.queues, ws.rdb = []string{"default"}, critical.rdb })

			critical.enqueue(t, "order-1")
			<-started
			parked := dflt.enqueue(t, "order-1")
			ti := dflt.waitState(t, parked.ID, asynq.TaskStateRetry, "the task in default did not park")
			require.Contains(t, ti.LastErr, "busy round 1")

			released := time.Now()
			close(hold)
			waitFor(t, 5*time.Second, func() bool { return ranAt.Load() != 0 },
				"a release in critical did not wake the task parked in default")
			took := time.Duration(ranAt.Load() - released.UnixNano())
			t.Logf("parked task in the other queue ran %s after the release", took.Round(time.Millisecond))
			require.Less(t, took, 2*time.Second)
		})
	}
}

// A holder that crashes, or lets its lease run out, releases nothing and
// so wakes nobody: the tasks parked on its key must still run within
// about one TTL of its acquisition, not at the safety net (an hour here).
func TestGuard_ParkedTasksOutliveAHolderThatNeverReleases(t *testing.T) {
	t.Parallel()
	be := backends[0] // miniredis expires keys only when told to
	require.False(t, be.mini)
	const ttl = 2 * time.Second
	var done atomic.Int64
	w := startWorker(t, be, 4, func(context.Context, *asynq.Task) error {
		done.Add(1)
		return nil
	}, func(ws *workerSetup) { ws.rule.Wait = -1 })
	held := holdKey(t, w, "crashed", ttl)

	const n = 3
	var ids []string
	for range n {
		ids = append(ids, w.enqueue(t, "crashed").ID)
	}
	for _, id := range ids {
		ti := w.waitState(t, id, asynq.TaskStateRetry, "the task did not park")
		require.Contains(t, ti.LastErr, "busy round")
	}
	// asynq schedules retries to the second and forwards them every 100 ms
	// here: allow the TTL, a second of margin and a second of rounding.
	bound := ttl + 3*time.Second
	waitFor(t, bound+5*time.Second, func() bool { return done.Load() == n },
		"tasks parked on an expired lock did not run")
	took := time.Since(held.AcquiredAt())
	t.Logf("%d parked tasks ran %s after a %s holder took the key and never released it", n, took.Round(time.Millisecond), ttl)
	require.Less(t, took, bound)
}

// A task busy once long ago, then failing for other reasons through its
// backoff (or archived by its handler and run again by an operator),
// starts its busy count over: its next busy round parks it again instead
// of archiving it for having been "busy for two hours".
func TestGuard_BusyCountStartsOverAfterARun(t *testing.T) {
	t.Parallel()
	failures := []struct {
		name  string
		err   error
		state asynq.TaskState
	}{
		{"Retried", errors.New("gateway down"), asynq.TaskStateRetry},
		{"Archived", fmt.Errorf("gateway down: %w", asynq.SkipRetry), asynq.TaskStateArchived},
	}
	for _, be := range backends {
		for _, f := range failures {
			t.Run(be.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				var calls atomic.Int64
				w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error {
					if calls.Add(1) == 1 {
						return f.err
					}
					return nil
				}, func(ws *workerSetup) { ws.rule.Wait = -1 })
				ctx := t.Context()
				held := holdKey(t, w, "refund-7", time.Minute)

				info := w.enqueue(t, "refund-7")
				w.waitState(t, info.ID, asynq.TaskStateRetry, "the task did not park")
				// That busy round was two hours ago.
				taskKey := "asynq:{" + w.queue + "}:t:" + info.ID
				require.NoError(t, w.rdb.HSet(ctx, taskKey, "turnstile_busy_since", time.Now().Add(-2*time.Hour).UnixMilli()).Err())

				require.NoError(t, held.Release(ctx))
				require.NoError(t, w.inspect.RunTask(w.queue, info.ID))
				waitFor(t, 10*time.Second, func() bool { return calls.Load() == 1 }, "the task did not run")
				ti := w.waitState(t, info.ID, f.state, "the failed task was not retried or archived")
				require.Contains(t, ti.LastErr, "gateway down")

				// The key is busy again on its next run: one busy round, parked.
				holdKey(t, w, "refund-7", time.Minute)
				require.NoError(t, w.inspect.RunTask(w.queue, info.ID))
				waitFor(t, 10*time.Second, func() bool {
					ti, _ = w.inspect.GetTaskInfo(w.queue, info.ID)
					return ti != nil && ti.State != asynq.TaskStatePending && ti.State != asynq.TaskStateActive &&
						ti.LastErr != "" && !strings.Contains(ti.LastErr, "gateway down")
				}, "no busy round after the failure")
				require.Equal(t, asynq.TaskStateRetry, ti.State, "archived: %s", ti.LastErr)
				require.Contains(t, ti.LastErr, "busy round 1")
			})
		}
	}
}

// Parked lists expire: an ID left behind by a task that ran on its own
// retry cannot stay in Redis forever, nor can the index of the queues with
// tasks parked on a key.
func TestGuard_ParkedListsExpire(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, be, 2, func(context.Context, *asynq.Task) error { return nil },
				func(ws *workerSetup) { ws.rule.Wait = -1 })
			holdKey(t, w, "k", time.Minute)
			info := w.enqueue(t, "k")
			w.waitState(t, info.ID, asynq.TaskStateRetry, "the task did not park")
			keys, err := w.rdb.Keys(t.Context(), "*turnstile:parked*").Result()
			require.NoError(t, err)
			require.NotEmpty(t, keys)
			for _, k := range keys {
				ttl, err := w.rdb.PTTL(t.Context(), k).Result()
				require.NoError(t, err)
				require.Positive(t, ttl, "%s has no TTL", k)
				require.LessOrEqual(t, ttl, 3*time.Hour, "%s lives too long", k)
			}
		})
	}
}
