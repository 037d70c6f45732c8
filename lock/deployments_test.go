package lock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// The lock on a real 3-master Redis Cluster with a replica each (issue
// 14): resources on different masters taken all or none, a waiter of
// another process handed the lock, and fences that never repeat through a
// hard kill of a master. The subtests share the cluster and run in order:
// the last one kills a master.
func TestLocker_OnRedisCluster(t *testing.T) { //nolint:tparallel // see above
	t.Parallel()
	cluster := redistest.Cluster(t, 3, 1)
	newLocker := func(t *testing.T, cfg lock.Config) *lock.Locker {
		t.Helper()
		// As worker.OpenRedis builds it: the slot map reloads every
		// second, so a dead master's replica is found soon after it is
		// promoted (go-redis's default is a minute).
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ClusterStateReloadInterval: time.Second})
		t.Cleanup(func() { _ = rdb.Close() })
		redistest.CheckSlots(t, rdb)
		l, err := lock.New(rdb, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l
	}
	// onMasters returns resources whose keys live on different masters.
	onMasters := func(kind string) []lock.Resource {
		var rs []lock.Resource
		seen := map[string]bool{}
		for i := 0; len(rs) < 3; i++ {
			r := lock.Key(kind, i)
			m := cluster.MasterOf(lock.DefaultPrefix + "{" + r.String() + "}").Addr()
			if !seen[m] {
				seen[m] = true
				rs = append(rs, r)
			}
		}
		return rs
	}

	t.Run("ResourcesOnEveryMasterAllOrNone", func(t *testing.T) {
		rs := onMasters("spread")
		a := newLocker(t, lock.Config{})
		b := newLocker(t, lock.Config{})
		lease, err := a.Acquire(t.Context(), rs...)
		require.NoError(t, err)
		for _, r := range rs {
			held, err := b.Held(t.Context(), r)
			require.NoError(t, err)
			require.True(t, held, "%s", r)
		}
		// One of them held: the others are not taken either.
		_, err = b.Acquire(t.Context(), rs[1:]...)
		_, busy := errors.AsType[*lock.BusyError](err)
		require.True(t, busy, "%v", err)
		require.NoError(t, lease.Release(t.Context()))
		for _, r := range rs {
			held, err := b.Held(t.Context(), r)
			require.NoError(t, err)
			require.False(t, held, "%s stayed held", r)
		}
	})

	t.Run("AWaiterOfAnotherProcessIsHandedTheLock", func(t *testing.T) {
		r := lock.Key("handed", 1)
		holder := newLocker(t, lock.Config{})
		waiter := newLocker(t, lock.Config{Wait: 10 * time.Second})
		lease, err := holder.Acquire(t.Context(), r)
		require.NoError(t, err)
		got := make(chan *lock.Lease, 1)
		go func() {
			next, err := waiter.Acquire(t.Context(), r)
			if err != nil {
				t.Error(err)
			}
			got <- next
		}()
		waitQueued(t, cluster.Client(t), lock.DefaultPrefix+"{"+r.String()+"}", 1)
		released := time.Now()
		require.NoError(t, lease.Release(t.Context()))
		next := receive(t, got)
		require.Greater(t, next.Fence(r), lease.Fence(r))
		require.Less(t, time.Since(released), time.Second, "the waiter was not handed the lock")
		require.NoError(t, next.Release(t.Context()))
	})

	// A master of the resource is killed mid-run and its replica, which
	// may have missed the last bumps, takes over: the fences handed out
	// before and after still only grow.
	t.Run("FencesOnlyGrowThroughAMasterKill", func(t *testing.T) {
		r := lock.Key("failover", 1)
		master := cluster.MasterOf(lock.DefaultPrefix + "{" + r.String() + "}")
		require.NotNil(t, master)
		fencesGrowThrough(t, newLocker(t, lock.Config{TTL: time.Second}), r, func() { cluster.Kill(master) })
	})
}

// Through Redis Sentinel, a hard kill of the master: the failover client
// follows the promoted replica, and fences handed out before and after
// only grow, though the replica may have missed the last bumps (issue 14).
func TestLocker_OnRedisSentinelFencesGrowThroughAFailover(t *testing.T) {
	t.Parallel()
	sentinel := redistest.Sentinel(t)
	rdb := sentinel.Client(t)
	l, err := lock.New(rdb, lock.Config{TTL: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	fencesGrowThrough(t, l, lock.Key("sentinel", 1), func() { sentinel.KillMaster() })
}

// fencesGrowThrough takes r 50 times, calls kill (a master's death and its
// replica's promotion), takes r 50 more times as soon as it can again, and
// checks that the fences only grew. Until the client finds the new
// master, acquisitions fail, or find the lock a dead holder left, busy
// until its TTL.
func fencesGrowThrough(t *testing.T, l *lock.Locker, r lock.Resource, kill func()) {
	t.Helper()
	var fences []int64
	take := func(ctx context.Context) error {
		lease, err := l.Acquire(ctx, r)
		if err != nil {
			return err
		}
		fences = append(fences, lease.Fence(r))
		return lease.Release(ctx)
	}
	for range 50 {
		require.NoError(t, take(t.Context()))
	}
	killed := time.Now()
	kill()
	deadline := time.Now().Add(30 * time.Second)
	var pause time.Duration
	for ok := 0; ok < 50; {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := take(ctx)
		cancel()
		if err == nil {
			if ok == 0 {
				pause = time.Since(killed)
			}
			ok++
			continue
		}
		require.True(t, time.Now().Before(deadline), "no acquisition after the failover: %v", err)
		time.Sleep(50 * time.Millisecond)
	}
	require.True(t, slices.IsSorted(fences), "fences went back: %v", fences)
	require.Len(t, slices.Compact(slices.Clone(fences)), len(fences), "a fence was handed out twice")
	t.Logf("%d acquisitions; the first after the kill came %s after it", len(fences), pause.Round(time.Millisecond))
}
