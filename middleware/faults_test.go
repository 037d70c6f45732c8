package middleware_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
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

// cutLocks fails every command on a lock key, alone or pipelined, while
// armed: a connection reset that hits the release and nothing else.
type cutLocks struct{ until atomic.Int64 }

func (*cutLocks) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *cutLocks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := c.cut(cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (c *cutLocks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := c.cut(cmd); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmds)
	}
}

func (c *cutLocks) cut(cmd redis.Cmder) error {
	if time.Now().UnixNano() > c.until.Load() {
		return nil
	}
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "turnstile:lock:") {
			return errors.New("connection reset by peer (cutLocks)")
		}
	}
	return nil
}

// A release cut off by a brief network fault is tried again: given up,
// the lease kept refreshing (a holder that has not released expects
// that), and the resource stayed taken until MaxHold, a minute, instead
// of going to the next task (found by the fault suite's resets).
func TestGuard_AReleaseCutOffIsTriedAgain(t *testing.T) {
	t.Parallel()
	cut := &cutLocks{}
	ran := make(chan time.Time, 2)
	w := startWorker(t, backends[0], 2, func(_ context.Context, task *asynq.Task) error {
		if strings.Contains(string(task.Payload()), "first") {
			cut.until.Store(time.Now().Add(400 * time.Millisecond).UnixNano())
		}
		ran <- time.Now()
		return nil
	}, func(ws *workerSetup) {
		ws.hook = cut
		ws.rule.Keys = func(*asynq.Task) ([]lock.Resource, error) { return []lock.Resource{lock.Key("thing", "shared")}, nil }
	})
	w.enqueue(t, "first")
	first := <-ran
	time.Sleep(time.Until(time.Unix(0, cut.until.Load()))) // the second's own acquire is not cut
	w.enqueue(t, "second")
	select {
	case second := <-ran:
		t.Logf("the second task ran %s after the first", second.Sub(first).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the resource stayed taken after a release that a brief fault cut off")
	}
}
