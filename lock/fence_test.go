package lock_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// Fence counters expire FenceRetention after their last bump, so that
// resources locked once keep no key forever (issue 14), whichever way the
// bump went: the clock ahead of the counter, or the counter ahead.
func TestFence_CounterExpiresAfterRetention(t *testing.T) {
	t.Parallel()
	require.Equal(t, lock.FenceRetentionMS, strconv.FormatInt(lock.FenceRetention.Milliseconds(), 10))
	rdb := redistest.Server(t).Client(t)
	l, err := lock.New(rdb, lock.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	for _, ahead := range []bool{false, true} {
		key := lock.Key("fence", strconv.FormatBool(ahead))
		fenceKey := lock.DefaultPrefix + "{" + key.String() + "}:fence"
		if ahead {
			require.NoError(t, rdb.Set(t.Context(), fenceKey, int64(1)<<52, 0).Err())
		}
		lease, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		ttl := rdb.PTTL(t.Context(), fenceKey).Val()
		require.Greater(t, ttl, lock.FenceRetention-time.Minute, "ahead=%v", ahead)
		require.LessOrEqual(t, ttl, lock.FenceRetention, "ahead=%v", ahead)
		require.NoError(t, lease.Release(t.Context()))
	}
}

// Once a counter has expired, the next fence comes from the clock, and is
// still above every fence handed out before.
func TestFence_GrowsAcrossAnExpiredCounter(t *testing.T) {
	t.Parallel()
	mr, rdb := redistest.MiniClient(t)
	l, err := lock.New(rdb, lock.Config{Wait: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	key := lock.Key("fence", "expiring")
	fenceKey := lock.DefaultPrefix + "{" + key.String() + "}:fence"
	var last int64
	for range 3 {
		lease, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		require.Greater(t, lease.Fence(key), last)
		last = lease.Fence(key)
		require.NoError(t, lease.Release(t.Context()))
		mr.FastForward(lock.FenceRetention + time.Second)
		require.ErrorIs(t, rdb.Get(t.Context(), fenceKey).Err(), redis.Nil, "the counter outlived its retention")
	}
}
