package lock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/lock"
)

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
		panic("unreachable")
	}
}

func requireClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Fatal("channel is open")
	}
}

func requireFree(t *testing.T, rdb redis.UniversalClient, rs ...lock.Resource) {
	t.Helper()
	for _, r := range rs {
		require.Zero(t, rdb.Exists(t.Context(), lock.DefaultPrefix+"{"+r.String()+"}").Val(), "%s is held", r)
	}
}

// waitQueued waits until n waiters are queued on lockKey.
func waitQueued(t *testing.T, rdb redis.UniversalClient, lockKey string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.ZCard(t.Context(), lockKey+":queue").Val() < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d waiters queued", n)
		}
		time.Sleep(time.Millisecond)
	}
}

var errDown = errors.New("redis is down (simulated)")

// failingHook makes every command fail while fail is set, as if Redis were
// unreachable.
type failingHook struct{ fail atomic.Bool }

func (h *failingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *failingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fail.Load() {
			cmd.SetErr(errDown)
			return errDown
		}
		return next(ctx, cmd)
	}
}

func (h *failingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type recorder struct {
	mu       sync.Mutex
	acquired []lock.AcquireEvent
	released []lock.ReleaseEvent
	lost     []lock.LostEvent
}

func (r *recorder) Acquired(_ context.Context, ev lock.AcquireEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acquired = append(r.acquired, ev)
}

func (r *recorder) Released(_ context.Context, ev lock.ReleaseEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = append(r.released, ev)
}

func (r *recorder) Lost(_ context.Context, ev lock.LostEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, ev)
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() int { return int(c.n.Add(1)) }

// lostReplyHook lets the next command run on Redis, then fails it as if its
// reply had been lost, once, when armed.
type lostReplyHook struct{ armed atomic.Bool }

func (h *lostReplyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostReplyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if h.armed.CompareAndSwap(true, false) {
			cmd.SetErr(errDown)
			return errDown
		}
		return err
	}
}

func (h *lostReplyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.armed.CompareAndSwap(true, false) {
			for _, c := range cmds {
				c.SetErr(errDown)
			}
			return errDown
		}
		return err
	}
}
