package lock_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(pauseChildEnv); addr != "" {
		os.Exit(pauseChild(addr))
	}
	goleak.VerifyTestMain(m)
}

// backend is one kind of Redis the conformance suite runs against.
type backend struct {
	// client returns a fresh client to the test's own server; every call
	// gives another connection pool, like another process would have.
	client func(t *testing.T) redis.UniversalClient
	// elapse lets d pass for the server's TTLs.
	elapse func(d time.Duration)
	// setClock, where the backend can, sets the server's clock (TIME):
	// only miniredis's can be stepped back here.
	setClock func(t time.Time)
	// sharded runs the Lockers as on Redis Cluster, one script per slot,
	// and fails the test on any script call whose keys span slots.
	sharded bool
}

// newLocker is lock.New, or its Cluster form on a sharded backend.
func (b backend) newLocker(t *testing.T, rdb redis.UniversalClient, cfg lock.Config) *lock.Locker {
	t.Helper()
	newLocker := lock.New
	if b.sharded {
		redistest.CheckSlots(t, rdb)
		newLocker = lock.NewSharded
	}
	l, err := newLocker(rdb, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

func TestLocker_Miniredis(t *testing.T) {
	t.Parallel()
	testLocker(t, func(t *testing.T) backend {
		t.Helper()
		mr := redistest.Mini(t)
		return backend{
			client: func(*testing.T) redis.UniversalClient {
				return redis.NewClient(&redis.Options{Addr: mr.Addr()})
			},
			elapse:   mr.FastForward,
			setClock: mr.SetTime,
		}
	})
}

func TestLocker_Redis(t *testing.T) {
	t.Parallel()
	testLocker(t, redisBackend(false))
}

// TestLocker_RedisSharded runs the suite's Lockers as on Redis Cluster
// (issue 12, item 4: a multi-resource Acquire answered CROSSSLOT there):
// every script call must keep to one slot, and the contract must hold
// across slots.
func TestLocker_RedisSharded(t *testing.T) {
	t.Parallel()
	testLocker(t, redisBackend(true))
}

func redisBackend(sharded bool) func(t *testing.T) backend {
	return func(t *testing.T) backend {
		t.Helper()
		srv := redistest.Server(t)
		return backend{
			client: func(t *testing.T) redis.UniversalClient {
				t.Helper()
				return srv.Client(t)
			},
			elapse:  time.Sleep,
			sharded: sharded,
		}
	}
}

type testBundle struct {
	backend
	rdb    redis.UniversalClient
	locker *lock.Locker
}

func testLocker(t *testing.T, newBackend func(t *testing.T) backend) {
	t.Helper()
	setup := func(t *testing.T, cfg lock.Config) *testBundle {
		t.Helper()
		b := newBackend(t)
		rdb := b.client(t)
		t.Cleanup(func() { _ = rdb.Close() })
		return &testBundle{backend: b, rdb: rdb, locker: b.newLocker(t, rdb, cfg)}
	}
	// other returns a second Locker on its own client, as another process,
	// with hooks on that client (faults to inject).
	other := func(t *testing.T, b *testBundle, cfg lock.Config, hooks ...redis.Hook) *lock.Locker {
		t.Helper()
		rdb := b.client(t)
		t.Cleanup(func() { _ = rdb.Close() })
		for _, h := range hooks {
			rdb.AddHook(h)
		}
		return b.newLocker(t, rdb, cfg)
	}
	key := lock.Key("order", 42)
	lockKey := lock.DefaultPrefix + "{order:42}"

	t.Run("AcquireSetsTTLAtomically", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: 10 * time.Second})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		pttl, err := b.rdb.PTTL(ctx, lockKey).Result()
		require.NoError(t, err)
		require.Greater(t, pttl, time.Duration(0))
		require.LessOrEqual(t, pttl, 10*time.Second)
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val())
		require.Positive(t, lease.Fence(key))
		require.Zero(t, lease.Fence(lock.Key("order", 43)))
		require.InDelta(t, float64(10*time.Second), float64(lease.TTL()), float64(time.Second))

		_, err = b.locker.Acquire(ctx, key)
		var busy *lock.BusyError
		require.ErrorAs(t, err, &busy)
		require.ErrorIs(t, err, lock.ErrNotAcquired)
		require.Equal(t, key, busy.Resource)
		require.Greater(t, busy.TTL, time.Duration(0))
		require.LessOrEqual(t, busy.TTL, 10*time.Second)
	})

	t.Run("HeldFollowsTheLease", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		held, err := b.locker.Held(ctx, key)
		require.NoError(t, err)
		require.False(t, held)
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		held, err = other(t, b, lock.Config{}).Held(ctx, key)
		require.NoError(t, err)
		require.True(t, held)
		require.NoError(t, lease.Release(ctx))
		held, err = b.locker.Held(ctx, key)
		require.NoError(t, err)
		require.False(t, held)
	})

	t.Run("WantIsReportedByEveryReleaseUntilCleared", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		other := other(t, b, lock.Config{})
		free := lock.Key("wanted", "free")
		held, err := other.Want(ctx, free, time.Minute)
		require.NoError(t, err)
		require.False(t, held, "a free resource is not marked")
		lease, err := b.locker.Acquire(ctx, free)
		require.NoError(t, err)
		require.NoError(t, lease.Release(ctx))
		require.Empty(t, lease.Wanted())

		k := lock.Key("wanted", "busy")
		first, err := b.locker.Acquire(ctx, key, k)
		require.NoError(t, err)
		require.Nil(t, first.Wanted(), "nothing is reported before Release")
		held, err = other.Want(ctx, k, time.Minute)
		require.NoError(t, err)
		require.True(t, held)
		require.NoError(t, first.Release(ctx))
		require.Equal(t, []lock.Resource{k}, first.Wanted())

		// The mark outlives the release, for the next holder's release...
		second, err := b.locker.Acquire(ctx, k)
		require.NoError(t, err)
		require.NoError(t, second.Release(ctx))
		require.Equal(t, []lock.Resource{k}, second.Wanted())
		// ...and a clear with a mark that changed since does nothing.
		third, err := b.locker.Acquire(ctx, k)
		require.NoError(t, err)
		held, err = other.Want(ctx, k, time.Minute)
		require.NoError(t, err)
		require.True(t, held)
		require.NoError(t, second.ClearWanted(ctx, k))
		require.NoError(t, third.Release(ctx))
		require.Equal(t, []lock.Resource{k}, third.Wanted())
		require.NoError(t, third.ClearWanted(ctx, k))

		fourth, err := b.locker.Acquire(ctx, k)
		require.NoError(t, err)
		require.NoError(t, fourth.Release(ctx))
		require.Empty(t, fourth.Wanted())

		// A mark nobody clears lasts its ttl past the last Want.
		fifth, err := b.locker.Acquire(ctx, k)
		require.NoError(t, err)
		held, err = other.Want(ctx, k, 100*time.Millisecond)
		require.NoError(t, err)
		require.True(t, held)
		b.elapse(200 * time.Millisecond)
		require.NoError(t, fifth.Release(ctx))
		require.Empty(t, fifth.Wanted(), "the mark outlived its ttl")
	})

	t.Run("FailedAcquireLeavesHolderAlone", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: 10 * time.Second})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		before := b.rdb.PTTL(ctx, lockKey).Val()

		rival := other(t, b, lock.Config{TTL: time.Minute, Wait: 50 * time.Millisecond})
		_, err = rival.Acquire(ctx, key)
		require.ErrorIs(t, err, lock.ErrNotAcquired)

		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val(), "the loser changed the holder")
		require.LessOrEqual(t, b.rdb.PTTL(ctx, lockKey).Val(), before, "the loser extended the holder")
		require.Zero(t, b.rdb.ZCard(ctx, lockKey+":queue").Val(), "the loser stayed in the queue")
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("BusyErrorNamesTheOwner", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: 10 * time.Second})
		ctx := t.Context()
		owned, err := b.locker.With(lock.Options{TTL: 10 * time.Second, Owner: "payment:confirm/task-7"})
		require.NoError(t, err)
		lease, err := owned.Acquire(ctx, key)
		require.NoError(t, err)
		t.Cleanup(func() { _ = lease.Release(context.Background()) })

		for _, wait := range []time.Duration{0, 20 * time.Millisecond} {
			rival := other(t, b, lock.Config{Wait: wait})
			_, err = rival.Acquire(ctx, key)
			busy, ok := errors.AsType[*lock.BusyError](err)
			require.True(t, ok, "wait %s: %v", wait, err)
			require.Equal(t, "payment:confirm/task-7", busy.Owner, "wait %s", wait)
			require.NotContains(t, busy.Error(), lease.Token()[:26], "the holder's secret leaked")
		}
		_, err = b.locker.With(lock.Options{Owner: "a|b"})
		require.Error(t, err)
	})

	t.Run("ReleaseTwiceIsSafe", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		require.NoError(t, lease.Release(ctx))
		require.NoError(t, lease.Release(ctx))
		require.Zero(t, b.rdb.Exists(ctx, lockKey).Val())
		require.ErrorIs(t, lease.Err(), lock.ErrNotHeld)
		requireClosed(t, lease.Done())
		require.ErrorIs(t, lease.Extend(ctx, 0), lock.ErrNotHeld)

		again, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		require.Greater(t, again.Fence(key), lease.Fence(key))
		require.NoError(t, again.Release(ctx))
	})

	t.Run("StaleHolderCannotReleaseOrExtend", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: 100 * time.Millisecond})
		ctx := t.Context()
		stale, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		b.elapse(150 * time.Millisecond) // the holder pauses past its TTL

		fresh, err := other(t, b, lock.Config{TTL: time.Minute}).Acquire(ctx, key)
		require.NoError(t, err)
		require.Greater(t, fresh.Fence(key), stale.Fence(key))

		require.ErrorIs(t, stale.Extend(ctx, time.Minute), lock.ErrNotHeld)
		require.ErrorIs(t, stale.Release(ctx), lock.ErrNotHeld)
		require.Equal(t, fresh.Token(), b.rdb.Get(ctx, lockKey).Val(), "the stale holder removed the new lock")
		require.NoError(t, fresh.Release(ctx))
	})

	t.Run("ExtendResetsTTL", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: time.Second})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		require.NoError(t, lease.Extend(ctx, time.Minute))
		require.Greater(t, b.rdb.PTTL(ctx, lockKey).Val(), 30*time.Second)
		require.Greater(t, lease.TTL(), 30*time.Second)
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("MultiKeyAllOrNone", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		a, busy, c := lock.Key("k", "a"), lock.Key("k", "b"), lock.Key("k", "c")
		holder, err := other(t, b, lock.Config{}).Acquire(ctx, busy)
		require.NoError(t, err)

		_, err = b.locker.Acquire(ctx, c, busy, a)
		var be *lock.BusyError
		require.ErrorAs(t, err, &be)
		require.Equal(t, busy, be.Resource)
		requireFree(t, b.rdb, a, c)

		waiting, err := b.locker.With(lock.Options{Wait: 100 * time.Millisecond})
		require.NoError(t, err)
		_, err = waiting.Acquire(ctx, c, busy, a)
		require.ErrorIs(t, err, lock.ErrNotAcquired)
		requireFree(t, b.rdb, a, c)

		require.NoError(t, holder.Release(ctx))
		lease, err := b.locker.Acquire(ctx, c, busy, a, a)
		require.NoError(t, err)
		require.Equal(t, []lock.Resource{a, busy, c}, lease.Resources())
		for _, r := range lease.Resources() {
			require.Positive(t, lease.Fence(r))
		}
		require.NoError(t, lease.Release(ctx))
		requireFree(t, b.rdb, a, busy, c)
	})

	t.Run("WaiterIsHandedTheLock", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		holder, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)

		waiter := other(t, b, lock.Config{Wait: 10 * time.Second})
		got := make(chan *lock.Lease, 1)
		go func() {
			lease, err := waiter.Acquire(ctx, key)
			if err != nil {
				t.Error(err)
			}
			got <- lease
		}()
		waitQueued(t, b.rdb, lockKey, 1)
		released := time.Now()
		require.NoError(t, holder.Release(ctx))
		lease := receive(t, got)
		require.Less(t, time.Since(released), time.Second, "the hand-off waited for a timer")
		require.Greater(t, lease.Fence(key), holder.Fence(key))
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val())
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("WaitersAreServedInArrivalOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		holder, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)

		const n = 6
		var (
			mu    sync.Mutex
			order []int
			wg    sync.WaitGroup
		)
		// Cohorts off: every waiter queues in Redis (cohort_test.go
		// covers the order within a process).
		lockers := []*lock.Locker{
			other(t, b, lock.Config{Wait: 10 * time.Second, Cohort: -1}),
			other(t, b, lock.Config{Wait: 10 * time.Second, Cohort: -1}),
		}
		for i := range n {
			wg.Go(func() {
				lease, err := lockers[i%2].Acquire(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				if err := lease.Release(ctx); err != nil {
					t.Error(err)
				}
			})
			waitQueued(t, b.rdb, lockKey, int64(i+1))
		}
		require.NoError(t, holder.Release(ctx))
		wg.Wait()
		require.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
	})

	t.Run("CancelWhileWaitingReturnsPromptly", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{Wait: time.Minute})
		holder, err := other(t, b, lock.Config{}).Acquire(t.Context(), key)
		require.NoError(t, err)

		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			_, err := b.locker.Acquire(ctx, key)
			errc <- err
		}()
		waitQueued(t, b.rdb, lockKey, 1)
		cancelled := time.Now()
		cancel()
		require.ErrorIs(t, receive(t, errc), context.Canceled)
		require.Less(t, time.Since(cancelled), time.Second)
		require.Zero(t, b.rdb.ZCard(t.Context(), lockKey+":queue").Val(), "the cancelled waiter stayed queued")

		dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer dcancel()
		_, err = b.locker.Acquire(dctx, key)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NoError(t, holder.Release(t.Context()))
	})

	t.Run("FailedReleaseKeepsToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: time.Minute})
		ctx := t.Context()
		down := &failingHook{}
		l := other(t, b, lock.Config{TTL: time.Minute}, down)
		lease, err := l.Acquire(ctx, key)
		require.NoError(t, err)

		down.fail.Store(true)
		err = lease.Release(ctx)
		require.ErrorIs(t, err, errDown)
		require.NotErrorIs(t, err, lock.ErrNotHeld)
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val())
		require.Positive(t, b.rdb.PTTL(ctx, lockKey).Val(), "the unreleased lock would never expire")

		down.fail.Store(false)
		require.NoError(t, lease.Release(ctx))
		require.Zero(t, b.rdb.Exists(ctx, lockKey).Val())
	})

	// Issue 12, item 1: after a failover or a restore that lost recent
	// writes, the fence counter comes back stale, not missing. The next
	// fence must still exceed every fence handed out.
	t.Run("FenceOutrunsAStaleCounter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		handed := lease.Fence(key)
		// The shape a lost write leaves: the counter one below the fence
		// handed out, and no lock.
		require.NoError(t, b.rdb.Set(ctx, lockKey+":fence", handed-1, 0).Err())
		require.NoError(t, b.rdb.Del(ctx, lockKey).Err())

		// Another process: this one still counts the lease as held.
		next, err := other(t, b, lock.Config{}).Acquire(ctx, key)
		require.NoError(t, err)
		require.Greater(t, next.Fence(key), handed, "a fence was handed out twice")
		require.NoError(t, next.Release(ctx))
		require.ErrorIs(t, lease.Release(ctx), lock.ErrNotHeld)
	})

	// Issue 15, clocks: fences are seeded from the server's clock, and a
	// clock behind the counter (stepped back, or a new master's lagging)
	// must not take them back: the counter wins. Where the server's clock
	// can be stepped (miniredis), it is, by an hour.
	t.Run("FencesGrowWhenTheServerClockIsBehindTheCounter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		fence := func() int64 {
			t.Helper()
			lease, err := b.locker.Acquire(ctx, key)
			require.NoError(t, err)
			require.NoError(t, lease.Release(ctx))
			return lease.Fence(key)
		}
		first := fence()
		// The counter an hour of microseconds ahead of the clock, as
		// after the clock stepped back an hour.
		ahead := first + time.Hour.Microseconds()
		require.NoError(t, b.rdb.Set(ctx, lockKey+":fence", ahead, 0).Err())
		second := fence()
		require.Greater(t, second, ahead, "the clock, behind the counter, took the fence back")
		if b.setClock == nil {
			return
		}
		b.setClock(time.Now().Add(-time.Hour))
		third := fence()
		require.Greater(t, third, second, "a fence went back when the server's clock stepped back")
		b.setClock(time.Now().Add(-2 * time.Hour))
		require.Greater(t, fence(), third)
	})

	// Issue 12, item 14: PEXPIRE 0 deletes a key.
	t.Run("ExtendRefusesATTLUnder1ms", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		err = lease.Extend(ctx, 500*time.Microsecond)
		require.Error(t, err)
		require.NotErrorIs(t, err, lock.ErrNotHeld)
		require.NoError(t, lease.Err())
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val(), "the lock was deleted")
		require.NoError(t, lease.Release(ctx))
	})

	// Issue 12, item 11: Extend resets the TTLs only when the lease still
	// holds every resource.
	t.Run("ExtendIsAllOrNone", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: 10 * time.Second})
		ctx := t.Context()
		k1, k2 := lock.Key("k", 1), lock.Key("k", 2)
		lease, err := b.locker.Acquire(ctx, k1, k2)
		require.NoError(t, err)
		// Someone else now holds k1 (the lease's lock on it ran out and
		// was taken).
		k1Key := lock.DefaultPrefix + "{k:1}"
		require.NoError(t, b.rdb.Set(ctx, k1Key, "someone-else", 10*time.Second).Err())

		require.ErrorIs(t, lease.Extend(ctx, time.Hour), lock.ErrNotHeld)
		require.LessOrEqual(t, b.rdb.PTTL(ctx, lock.DefaultPrefix+"{k:2}").Val(), 10*time.Second,
			"k2's TTL was extended although the lease no longer held k1")
		require.LessOrEqual(t, b.rdb.PTTL(ctx, k1Key).Val(), 10*time.Second)
		require.ErrorIs(t, lease.Release(ctx), lock.ErrNotHeld)
	})

	// Issue 12, item 12: a Release that fails keeps the token, so the
	// lease still runs out with its TTL and must say so.
	t.Run("FailedReleaseKeepsTheClockRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		down := &failingHook{}
		obs := &recorder{}
		l := other(t, b, lock.Config{TTL: 200 * time.Millisecond, Observer: obs}, down)
		lease, err := l.Acquire(ctx, key)
		require.NoError(t, err)

		down.fail.Store(true)
		require.ErrorIs(t, lease.Release(ctx), errDown)
		select {
		case <-lease.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done stayed open past the TTL after a failed release")
		}
		require.ErrorIs(t, lease.Err(), lock.ErrNotHeld)
		require.Zero(t, lease.TTL())
		obs.mu.Lock()
		require.Len(t, obs.lost, 1, "no lost-lease event")
		obs.mu.Unlock()
		down.fail.Store(false)
	})

	t.Run("FailedReleaseKeepsTheRefresherRunning", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		down := &failingHook{}
		l := other(t, b, lock.Config{TTL: time.Second, Refresh: true}, down)
		lease, err := l.Acquire(ctx, key)
		require.NoError(t, err)

		down.fail.Store(true)
		require.ErrorIs(t, lease.Release(ctx), errDown)
		down.fail.Store(false)
		// The refresher is back: it keeps the lease past its TTL.
		select {
		case <-lease.Done():
			t.Fatalf("the lease ended after a failed release: %v", lease.Err())
		case <-time.After(2500 * time.Millisecond):
		}
		require.NoError(t, lease.Err())
		require.NoError(t, lease.Release(ctx))
		requireClosed(t, lease.Done())
	})

	// Issue 12, item 8: a try-once Acquire whose script ran but whose reply
	// was lost (a read timeout, a context cancelled while the batch was out)
	// must not leave the lock held for its TTL.
	t.Run("TryOnceErrorLeavesNothingHeld", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{TTL: time.Minute})
		ctx := t.Context()
		lost := &lostReplyHook{}
		l := other(t, b, lock.Config{TTL: time.Minute}, lost)

		// Load the script first: the failed call must be one that ran.
		warm, err := l.Acquire(ctx, lock.Key("warm", "up"))
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))

		lost.armed.Store(true)
		_, err = l.Acquire(ctx, key)
		require.ErrorIs(t, err, errDown)
		require.False(t, lost.armed.Load(), "the hook never saw the acquire")
		require.Zero(t, b.rdb.Exists(ctx, lockKey).Val(), "the lock stayed held after a failed acquire")
	})

	// Issue 12 (suspicion, confirmed): a resource taken first in a
	// multi-resource wait can run out before the last one comes. Acquire
	// returned ErrNotHeld, which the guard counts as a failure; it now
	// starts over within its budget.
	t.Run("LongWaitRetakesALostPrefix", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		ctx := t.Context()
		first, second := lock.Key("k", "1"), lock.Key("k", "2")
		holder, err := other(t, b, lock.Config{TTL: 10 * time.Second}).Acquire(ctx, second)
		require.NoError(t, err)
		waiting, err := b.locker.With(lock.Options{TTL: 100 * time.Millisecond, Wait: 5 * time.Second})
		require.NoError(t, err)
		got := make(chan error, 1)
		var lease *lock.Lease
		go func() {
			var err error
			lease, err = waiting.Acquire(ctx, first, second)
			got <- err
		}()
		waitQueued(t, b.rdb, lock.DefaultPrefix+"{k:2}", 1)
		// Let the first resource's 100ms run out (on miniredis, make it).
		time.Sleep(300 * time.Millisecond)
		b.elapse(300 * time.Millisecond)
		require.NoError(t, holder.Release(ctx))
		require.NoError(t, receive(t, got))
		require.Positive(t, lease.TTL())
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lock.DefaultPrefix+"{k:1}").Val())
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lock.DefaultPrefix+"{k:2}").Val())
		require.NoError(t, lease.Release(ctx))
	})

	// Waiters on overlapping sets, on several Lockers: each resource has
	// one holder at a time, and nobody deadlocks (on the sharded backend
	// the sets span slots and are taken slot by slot).
	t.Run("OverlappingSetsExcludeAndFinish", func(t *testing.T) {
		t.Parallel()
		b := setup(t, lock.Config{})
		cfg := lock.Config{TTL: 10 * time.Second, Wait: 10 * time.Second}
		lockers := []*lock.Locker{other(t, b, cfg), other(t, b, cfg)}
		x, y, z := lock.Key("set", "x"), lock.Key("set", "y"), lock.Key("set", "z")
		sets := [][]lock.Resource{{x, y}, {y, z}, {z, x}, {x, y, z}}
		var inside [3]atomic.Int32
		index := map[lock.Resource]int{x: 0, y: 1, z: 2}
		var overlaps atomic.Int32
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Go(func() {
				for i := range 15 {
					set := sets[(g+i)%len(sets)]
					lease, err := lockers[g%2].Acquire(t.Context(), set...)
					if err != nil {
						t.Errorf("acquire %v: %v", set, err)
						return
					}
					for _, r := range set {
						if inside[index[r]].Add(1) > 1 {
							overlaps.Add(1)
						}
					}
					time.Sleep(200 * time.Microsecond) // the work the lease guards
					for _, r := range set {
						inside[index[r]].Add(-1)
					}
					assert.NoError(t, lease.Release(t.Context()))
				}
			})
		}
		wg.Wait()
		require.Zero(t, overlaps.Load(), "two holders of one resource at once")
		requireFree(t, b.rdb, x, y, z)
	})

	t.Run("ObserverSeesOutcomes", func(t *testing.T) {
		t.Parallel()
		obs := &recorder{}
		b := setup(t, lock.Config{Observer: obs})
		ctx := t.Context()
		lease, err := b.locker.Acquire(ctx, key)
		require.NoError(t, err)
		_, err = b.locker.Acquire(ctx, key)
		require.Error(t, err)
		require.NoError(t, lease.Release(ctx))

		obs.mu.Lock()
		defer obs.mu.Unlock()
		require.Len(t, obs.acquired, 2)
		require.NoError(t, obs.acquired[0].Err)
		require.Equal(t, []int64{lease.Fence(key)}, obs.acquired[0].Fences)
		require.ErrorIs(t, obs.acquired[1].Err, lock.ErrNotAcquired)
		require.False(t, obs.acquired[1].Contended.IsZero())
		require.Positive(t, obs.acquired[1].HolderTTL)
		require.Len(t, obs.released, 1)
		require.NoError(t, obs.released[0].Err)
	})
}

func TestNew_RefusesBadConfig(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	for _, tc := range []struct {
		name string
		cfg  lock.Config
		want string
	}{
		{"TTLUnder1ms", lock.Config{TTL: time.Microsecond}, "TTL"},
		{"NegativeWait", lock.Config{Wait: -time.Second}, "Wait"},
		{"PrefixWithBrace", lock.Config{Prefix: "a{b}:"}, "Prefix"},
		// Issue 12, item 9: a '|' in the prefix, and so in the waiters'
		// channel, breaks their queue entries: every waiter was dropped as
		// dead and the hand-off silently stopped.
		{"PrefixWithBar", lock.Config{Prefix: "a|b:"}, "Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, err := lock.New(rdb, tc.cfg)
			if err == nil {
				_ = l.Close()
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}
