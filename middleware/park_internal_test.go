package middleware

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// A parked list holds at most its cap: a task that finds it full is not
// parked (verdict 1) and retries on its busy delay, and every park renews
// the list's TTL.
func TestParkScript_CapsAndExpiresTheList(t *testing.T) {
	t.Parallel()
	rdb := redistest.Server(t).Client(t)
	redistest.CheckSlots(t, rdb)
	ctx := t.Context()
	list := parkedKey("default", lock.Key("thing", "full"))
	const limit, ttl = 3, time.Minute
	var verdicts []int64
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		require.NoError(t, rdb.HSet(ctx, taskKeyPrefix("default")+id, "state", "active").Err())
		v, err := parkScript.Run(ctx, rdb, []string{list, taskKeyPrefix("default") + id},
			id, time.Now().UnixMilli(), 0, 100, time.Hour.Milliseconds(), ttl.Milliseconds(), limit).Int64Slice()
		require.NoError(t, err)
		require.Len(t, v, 3, "reply %v", v)
		verdicts = append(verdicts, v[2])
	}
	require.Equal(t, []int64{2, 2, 2, 1, 1}, verdicts)
	ids, err := rdb.LRange(ctx, list, 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, ids)
	left, err := rdb.PTTL(ctx, list).Result()
	require.NoError(t, err)
	require.Positive(t, left)
	require.LessOrEqual(t, left, ttl)

	// A parked task parking again keeps one entry, at the tail.
	_, err = parkScript.Run(ctx, rdb, []string{list, taskKeyPrefix("default") + "a"},
		"a", time.Now().UnixMilli(), 0, 100, time.Hour.Milliseconds(), ttl.Milliseconds(), limit).Int64Slice()
	require.NoError(t, err)
	ids, err = rdb.LRange(ctx, list, 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"b", "c", "a"}, ids)
}

// A task whose hash is gone (a Redis restart lost it) is neither parked
// nor counted: counting would leave a hash asynq cannot read.
func TestParkScript_LeavesAGoneTaskAlone(t *testing.T) {
	t.Parallel()
	rdb := redistest.Server(t).Client(t)
	ctx := t.Context()
	list := parkedKey("default", lock.Key("thing", "busy"))
	v, err := parkScript.Run(ctx, rdb, []string{list, taskKeyPrefix("default") + "gone"},
		"gone", time.Now().UnixMilli(), 0, 100, time.Hour.Milliseconds(), time.Minute.Milliseconds(), 10).Int64Slice()
	require.NoError(t, err)
	require.Len(t, v, 3, "reply %v", v)
	require.Equal(t, int64(1), v[2], "not parked")
	n, err := rdb.Exists(ctx, taskKeyPrefix("default")+"gone", list).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the script wrote a hash or a list for a task that is gone")
}

// A wake-up that finds only active tasks takes them off the list and puts
// them back: the list must keep its TTL, or it outlives every task parked
// on it (found by the fault suite: a parked list left with no TTL).
func TestWakeScript_KeepsTheListsTTL(t *testing.T) {
	t.Parallel()
	rdb := redistest.Server(t).Client(t)
	redistest.CheckSlots(t, rdb)
	ctx := t.Context()
	list := parkedKey("default", lock.Key("thing", "busy"))
	for _, id := range []string{"a", "b"} {
		require.NoError(t, rdb.HSet(ctx, taskKeyPrefix("default")+id, "state", "active").Err())
		require.NoError(t, rdb.RPush(ctx, list, id).Err())
	}
	require.NoError(t, rdb.PExpire(ctx, list, time.Minute).Err())
	n, err := wakeScript.Run(ctx, rdb, []string{list, retryKey("default"), pendingKey("default")}, taskKeyPrefix("default"), "").Int()
	require.NoError(t, err)
	require.Equal(t, 2, n, "only active tasks were parked")
	ids, err := rdb.LRange(ctx, list, 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, ids, "the active tasks keep their places")
	left, err := rdb.PTTL(ctx, list).Result()
	require.NoError(t, err)
	require.Positive(t, left, "the list lost its TTL")
	require.LessOrEqual(t, left, time.Minute)
}
