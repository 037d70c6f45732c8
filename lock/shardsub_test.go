package lock_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// On Redis Cluster, hand-offs publish their grants with SPUBLISH to a
// channel of the resource's own slot, which the waiting Locker subscribes
// to on that slot's master (issue 14). The subtests share one cluster and
// run in order: the last one fails a master over.
func TestShardedGrants_OnRedisCluster(t *testing.T) { //nolint:tparallel // see above
	t.Parallel()
	// Registered first, so run last: go-redis retries a failed dial (to
	// the master the last subtest kills) in a goroutine that sleeps a
	// second between tries and only then sees its pool closed; goleak, at
	// the end of the package, would report it.
	t.Cleanup(func() { time.Sleep(1100 * time.Millisecond) })
	cluster := redistest.Cluster(t, 3, 1)
	newLocker := func(t *testing.T) *lock.Locker {
		t.Helper()
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ClusterStateReloadInterval: time.Second})
		t.Cleanup(func() { _ = rdb.Close() })
		redistest.CheckSlots(t, rdb)
		// A long TTL: a waiter that missed its grant would retry only
		// when the holder's TTL ran out, which the tests would see.
		l, err := lock.New(rdb, lock.Config{TTL: 10 * time.Second, Wait: 20 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l
	}
	onMaster := func(t *testing.T, kind string, master *redistest.Process) lock.Resource {
		t.Helper()
		for i := 0; ; i++ {
			r := lock.Key(kind, i)
			if cluster.MasterOf(lockKey(r)) == master {
				return r
			}
		}
	}

	t.Run("AWaiterOfAnotherLockerIsHandedTheLockOnEveryMaster", func(t *testing.T) {
		holder, waiter := newLocker(t), newLocker(t)
		for i, master := range cluster.Masters() {
			r := onMaster(t, "everywhere", master)
			lease, err := holder.Acquire(t.Context(), r)
			require.NoError(t, err)
			got := acquireInBackground(t, waiter, r)
			waitQueued(t, cluster.Client(t), lockKey(r), 1)
			waitLive(t, waiter, i+1)
			published, sharded := pubsubCalls(t, master)

			released := time.Now()
			require.NoError(t, lease.Release(t.Context()))
			next := receive(t, got)
			took := time.Since(released)
			require.Less(t, took, 2*time.Second, "the waiter on %s was not told of its grant", master.Addr())
			require.Greater(t, next.Fence(r), lease.Fence(r))
			published2, sharded2 := pubsubCalls(t, master)
			require.Equal(t, published, published2, "a grant was broadcast with PUBLISH")
			require.Equal(t, sharded+1, sharded2, "the grant was not sent with SPUBLISH")
			require.NoError(t, next.Release(t.Context()))
		}
	})

	// A slot nobody of ours can be waiting on any more is unsubscribed
	// (in Redis too), and a later wait there subscribes it again.
	t.Run("AnIdleSlotIsUnsubscribedAndSubscribedAgain", func(t *testing.T) {
		holder, waiter := newLocker(t), newLocker(t)
		lock.SweepSlotsSoon(waiter, 20*time.Millisecond, 200*time.Millisecond)
		brief, err := waiter.With(lock.Options{TTL: 10 * time.Second, Wait: 300 * time.Millisecond})
		require.NoError(t, err)
		r := onMaster(t, "idle", cluster.Masters()[2])
		ch := lock.GrantChannel(waiter, lockKey(r))
		rdb := cluster.Client(t)
		// On the slot's master itself: the cluster client sends PUBSUB
		// to any node.
		master := cluster.MasterOf(ch).Client(t)
		subscribers := func() int64 { return master.PubSubShardNumSub(t.Context(), ch).Val()[ch] }

		lease, err := holder.Acquire(t.Context(), r)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			_, err := brief.Acquire(t.Context(), r)
			done <- err
		}()
		waitLive(t, waiter, 1)
		require.Equal(t, int64(1), subscribers())
		require.ErrorIs(t, receive(t, done), lock.ErrNotAcquired)
		require.Eventually(t, func() bool {
			slots, live := lock.SlotChannels(waiter)
			return slots == 0 && live == 0 && subscribers() == 0
		}, 5*time.Second, 10*time.Millisecond, "the idle slot stayed subscribed")

		got := acquireInBackground(t, waiter, r)
		waitQueued(t, rdb, lockKey(r), 1)
		waitLive(t, waiter, 1)
		released := time.Now()
		require.NoError(t, lease.Release(t.Context()))
		next := receive(t, got)
		require.Less(t, time.Since(released), 2*time.Second, "the waiter was not told of its grant")
		require.NoError(t, next.Release(t.Context()))
	})

	// An entry whose channel is in a slot of another master (none of ours
	// is) cannot be published to from the release script: Redis refuses
	// it as a non-local key. The release still works and hands the
	// resource on, as where a grant goes unheard.
	t.Run("AnEntryWithAChannelOfAnotherMasterDoesNotFailTheRelease", func(t *testing.T) {
		holder := newLocker(t)
		master := cluster.Masters()[0]
		r := onMaster(t, "foreign", master)
		lease, err := holder.Acquire(t.Context(), r)
		require.NoError(t, err)
		var foreign string
		for i := 0; foreign == "" || cluster.MasterOf(foreign) == master; i++ {
			foreign = lock.DefaultPrefix + "waiters:X{" + strconv.Itoa(i) + "}"
		}
		rdb := cluster.Client(t)
		entry := "FOREIGNTOKEN|" + foreign + "|10000|20000"
		require.NoError(t, rdb.ZAdd(t.Context(), lockKey(r)+":queue", redis.Z{Score: float64(time.Now().UnixMicro()), Member: entry}).Err())

		require.NoError(t, lease.Release(t.Context()))
		require.Equal(t, "FOREIGNTOKEN", rdb.Get(t.Context(), lockKey(r)).Val(), "the resource was not handed on")
		require.NoError(t, rdb.Del(t.Context(), lockKey(r)).Err())
	})

	// CLUSTER FAILOVER moves the slot to the replica, and the old master
	// unsubscribes the slot's channel: the waiter polls until it has
	// subscribed on the new master, and is not stranded for the holder's
	// TTL either way.
	t.Run("AFailoverDoesNotStrandAWaiter", func(t *testing.T) {
		holder, waiter := newLocker(t), newLocker(t)
		master := cluster.Masters()[0]
		r := onMaster(t, "failover", master)
		lease, err := holder.Acquire(t.Context(), r)
		require.NoError(t, err)
		got := acquireInBackground(t, waiter, r)
		waitQueued(t, cluster.Client(t), lockKey(r), 1)
		waitLive(t, waiter, 1)

		promoted := cluster.Failover(master)
		released := time.Now()
		require.NoError(t, lease.Release(t.Context()))
		next := receive(t, got)
		require.Less(t, time.Since(released), 5*time.Second, "the waiter sat out the holder's TTL")
		require.Greater(t, next.Fence(r), lease.Fence(r))

		// Subscribed again, on the new master: the next grant comes by
		// pub/sub, not by a poll.
		waitLive(t, waiter, 1)
		got = acquireInBackground(t, holder, r)
		waitQueued(t, cluster.Client(t), lockKey(r), 1)
		waitLive(t, holder, 1)
		_, sharded := pubsubCalls(t, promoted)
		released = time.Now()
		require.NoError(t, next.Release(t.Context()))
		last := receive(t, got)
		require.Less(t, time.Since(released), 2*time.Second, "the holder was not told of its grant after the failover")
		_, sharded2 := pubsubCalls(t, promoted)
		require.Equal(t, sharded+1, sharded2, "the grant was not sent with SPUBLISH on the new master")
		require.NoError(t, last.Release(t.Context()))
	})

	// A SIGKILL of the master breaks the waiter's connection to it: the
	// waiter polls until it has subscribed on the promoted replica. The
	// holder's lock may or may not have reached the replica; either way
	// the waiter has the resource soon after the holder lets go.
	t.Run("AMasterKillDoesNotStrandAWaiter", func(t *testing.T) {
		holder, waiter := newLocker(t), newLocker(t)
		master := cluster.Masters()[1]
		r := onMaster(t, "kill", master)
		lease, err := holder.Acquire(t.Context(), r)
		require.NoError(t, err)
		got := acquireInBackground(t, waiter, r)
		waitQueued(t, cluster.Client(t), lockKey(r), 1)
		waitLive(t, waiter, 1)

		cluster.Kill(master)
		released := time.Now()
		// The holder's client may need a reload of its slot map to find
		// the new master: give its release a few tries.
		require.Eventually(t, func() bool {
			err := lease.Release(t.Context())
			return err == nil || errors.Is(err, lock.ErrNotHeld)
		}, 5*time.Second, 100*time.Millisecond)
		next := receive(t, got)
		require.Less(t, time.Since(released), 5*time.Second, "the waiter sat out the holder's TTL")
		require.NoError(t, next.Release(t.Context()))
		waitLive(t, waiter, 1)
	})
}

func lockKey(r lock.Resource) string { return lock.DefaultPrefix + "{" + r.String() + "}" }

// acquireInBackground starts l.Acquire(r) and returns where its lease
// will come; the test fails if it cannot acquire. The acquisition ends
// with the test.
func acquireInBackground(t *testing.T, l *lock.Locker, r lock.Resource) <-chan *lock.Lease {
	t.Helper()
	got := make(chan *lock.Lease, 1)
	errs := make(chan error, 1)
	go func() {
		lease, err := l.Acquire(t.Context(), r)
		errs <- err
		got <- lease
	}()
	t.Cleanup(func() {
		if err := <-errs; err != nil && t.Context().Err() == nil {
			t.Errorf("acquire %s: %v", r, err)
		}
	})
	return got
}

// waitLive waits until l has n slot channels, all confirmed by Redis.
func waitLive(t *testing.T, l *lock.Locker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		slots, live := lock.SlotChannels(l)
		if slots == n && live == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slot channels live, want %d", live, slots, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pubsubCalls returns how many PUBLISH and SPUBLISH calls master has run,
// scripts' included.
func pubsubCalls(t *testing.T, master *redistest.Process) (published, sharded int64) {
	t.Helper()
	info, err := master.Client(t).Info(t.Context(), "commandstats").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\r\n") {
		name, value, _ := strings.Cut(line, ":")
		calls, _, _ := strings.Cut(strings.TrimPrefix(value, "calls="), ",")
		switch name {
		case "cmdstat_publish":
			published, err = strconv.ParseInt(calls, 10, 64)
		case "cmdstat_spublish":
			sharded, err = strconv.ParseInt(calls, 10, 64)
		}
		require.NoError(t, err)
	}
	return published, sharded
}
