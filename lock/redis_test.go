package lock_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// These tests need a real redis-server: real expiry, real connections to
// kill and restart.

// overlapDetector fails the test when two holders are inside at once, and
// checks that fences grow in acquisition order.
type overlapDetector struct {
	inside    atomic.Int32
	overlaps  atomic.Int32
	mu        sync.Mutex
	lastFence int64
	backwards int
	entries   int
}

func (d *overlapDetector) enter(fence int64) {
	if d.inside.Add(1) > 1 {
		d.overlaps.Add(1)
	}
	d.mu.Lock()
	if fence <= d.lastFence {
		d.backwards++
	}
	d.lastFence = fence
	d.entries++
	d.mu.Unlock()
}

func (d *overlapDetector) leave() { d.inside.Add(-1) }

func TestLocker_MutualExclusion(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	key := lock.Key("contended")
	const goroutines = 32
	run := 3 * time.Second
	if testing.Short() {
		run = 500 * time.Millisecond
	}
	lockers := make([]*lock.Locker, 2)
	for i := range lockers {
		l, err := lock.New(srv.Client(t), lock.Config{TTL: 5 * time.Second, Wait: 10 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		lockers[i] = l
	}
	var d overlapDetector
	ctx := t.Context()
	stop := time.Now().Add(run)
	var wg sync.WaitGroup
	perGoroutine := make([]int, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for time.Now().Before(stop) {
				lease, err := lockers[g%2].Acquire(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				d.enter(lease.Fence(key))
				time.Sleep(100 * time.Microsecond)
				d.leave()
				if err := lease.Release(ctx); err != nil {
					t.Error(err)
					return
				}
				perGoroutine[g]++
			}
		})
	}
	wg.Wait()
	require.Zero(t, d.overlaps.Load(), "holders overlapped")
	require.Zero(t, d.backwards, "a fence did not grow in acquisition order")
	require.Greater(t, d.entries, goroutines)
	for g, n := range perGoroutine {
		require.Positive(t, n, "goroutine %d never acquired", g)
	}
	t.Logf("%d acquisitions by %d goroutines in %s", d.entries, goroutines, run)
}

func TestLocker_ReleaseWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	l, err := lock.New(rdb, lock.Config{TTL: 500 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	key := lock.Key("order", 7)
	lease, err := l.Acquire(t.Context(), key)
	require.NoError(t, err)
	token := lease.Token()

	srv.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err = lease.Release(ctx) // Release detaches from ctx but has its own bound
	require.Error(t, err)
	require.NotErrorIs(t, err, lock.ErrNotHeld)
	require.Equal(t, token, lease.Token())
	srv.Resume()

	// The unreleased lock expires by its TTL; retrying the release then
	// reports that it was no longer ours.
	require.Eventually(t, func() bool {
		return rdb.Exists(t.Context(), lock.DefaultPrefix+"{order:7}").Val() == 0
	}, 5*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, lease.Release(t.Context()), lock.ErrNotHeld)
}

func TestLocker_WaitersSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	key := lock.Key("order", 9)
	holderLocker, err := lock.New(srv.Client(t), lock.Config{TTL: time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, holderLocker.Close()) })
	waiters, err := lock.New(srv.Client(t), lock.Config{TTL: time.Minute, Wait: 20 * time.Second, Cohort: -1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, waiters.Close()) })

	_, err = holderLocker.Acquire(t.Context(), key)
	require.NoError(t, err)
	const n = 4
	var wg sync.WaitGroup
	var acquired atomic.Int32
	for range n {
		wg.Go(func() {
			lease, err := waiters.Acquire(t.Context(), key)
			if err != nil {
				t.Error(err)
				return
			}
			acquired.Add(1)
			if err := lease.Release(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(t, srv.Client(t), lock.DefaultPrefix+"{order:9}", n)
	srv.Restart() // the lock, the queue and the subscription are gone
	wg.Wait()
	require.Equal(t, int32(n), acquired.Load())
}

func TestLease_Refresh(t *testing.T) {
	t.Parallel()

	t.Run("KeepsLeaseAlive", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		const ttl = 200 * time.Millisecond
		l, err := lock.New(rdb, lock.Config{TTL: ttl, Refresh: true})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		lease, err := l.Acquire(t.Context(), lock.Key("job", 1))
		require.NoError(t, err)

		select {
		case <-lease.Done():
			t.Fatalf("lease ended while refreshed: %v", lease.Err())
		case <-time.After(5 * ttl):
		}
		require.Equal(t, lease.Token(), rdb.Get(t.Context(), lock.DefaultPrefix+"{job:1}").Val())
		require.NoError(t, lease.Release(t.Context()))
		requireClosed(t, lease.Done())
	})

	t.Run("DoneFiresBeforeTTLWhenRedisDies", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		const ttl = 600 * time.Millisecond
		obs := &recorder{}
		l, err := lock.New(srv.Client(t), lock.Config{TTL: ttl, Refresh: true, Observer: obs})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		asked := time.Now()
		lease, err := l.Acquire(t.Context(), lock.Key("job", 2))
		require.NoError(t, err)
		srv.Stop()

		<-receiveDone(t, lease)
		require.Less(t, time.Since(asked), ttl, "Done fired after Redis could have expired the lock")
		require.ErrorIs(t, lease.Err(), lock.ErrNotHeld)
		obs.mu.Lock()
		require.Len(t, obs.lost, 1)
		obs.mu.Unlock()
		require.Error(t, lease.Release(t.Context()))
	})

	t.Run("MaxHoldStopsTheRefresh", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		const ttl, maxHold = 150 * time.Millisecond, 500 * time.Millisecond
		base, err := lock.New(rdb, lock.Config{TTL: ttl, Refresh: true})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, base.Close()) })
		l, err := base.With(lock.Options{TTL: ttl, Refresh: true, MaxHold: maxHold})
		require.NoError(t, err)
		lease, err := l.Acquire(t.Context(), lock.Key("job", 4))
		require.NoError(t, err)

		<-receiveDone(t, lease)
		held := time.Since(lease.AcquiredAt())
		require.GreaterOrEqual(t, held, maxHold-ttl/2, "refreshed past its TTL, up to the cap")
		require.Less(t, held, maxHold+ttl, "the cap did not stop the refresh")
		require.ErrorIs(t, lease.Err(), lock.ErrNotHeld)
		require.Eventually(t, func() bool {
			return rdb.Exists(t.Context(), lock.DefaultPrefix+"{job:4}").Val() == 0
		}, 5*time.Second, time.Millisecond, "Redis still holds the lock")
	})

	t.Run("LeaseWithoutRefreshEndsAtTTL", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		l, err := lock.New(rdb, lock.Config{TTL: 100 * time.Millisecond})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		lease, err := l.Acquire(t.Context(), lock.Key("job", 3))
		require.NoError(t, err)
		<-receiveDone(t, lease)
		require.Zero(t, lease.TTL())
		// Done fires a drift allowance before Redis expires the lock.
		require.Eventually(t, func() bool {
			return rdb.Exists(t.Context(), lock.DefaultPrefix+"{job:3}").Val() == 0
		}, 5*time.Second, time.Millisecond)
		require.ErrorIs(t, lease.Release(t.Context()), lock.ErrNotHeld)
	})
}

func receiveDone(t *testing.T, lease *lock.Lease) <-chan struct{} {
	t.Helper()
	select {
	case <-lease.Done():
		return lease.Done()
	case <-time.After(10 * time.Second):
		t.Fatal("lease never ended")
		return nil
	}
}

func TestLocker_Quorum(t *testing.T) {
	t.Parallel()
	servers := []*redistest.Process{redistest.Server(t), redistest.Server(t), redistest.Server(t)}
	newQuorum := func(t *testing.T, cfg lock.Config) *lock.Locker {
		t.Helper()
		clients := make([]redis.UniversalClient, len(servers))
		for i, s := range servers {
			clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
			t.Cleanup(func() { _ = clients[i].Close() })
		}
		l, err := lock.NewQuorum(clients, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l
	}

	// Never two holders, from two processes at once.
	a := newQuorum(t, lock.Config{TTL: 5 * time.Second, Wait: 10 * time.Second})
	b := newQuorum(t, lock.Config{TTL: 5 * time.Second, Wait: 10 * time.Second})
	key := lock.Key("quorum")
	var d overlapDetector
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 10 {
				lease, err := []*lock.Locker{a, b}[g%2].Acquire(t.Context(), key)
				if err != nil {
					t.Error(err)
					return
				}
				d.enter(lease.Fence(key))
				time.Sleep(100 * time.Microsecond)
				d.leave()
				if err := lease.Release(t.Context()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, d.overlaps.Load())
	require.Equal(t, 80, d.entries)

	tryOnce := newQuorum(t, lock.Config{})
	held, err := a.Acquire(t.Context(), key)
	require.NoError(t, err)
	_, err = tryOnce.Acquire(t.Context(), key)
	require.ErrorIs(t, err, lock.ErrNotAcquired)
	wanted, err := tryOnce.Want(t.Context(), key, time.Minute)
	require.NoError(t, err)
	require.True(t, wanted, "held by a majority, so marked")
	require.NoError(t, held.Release(t.Context()))
	require.Equal(t, []lock.Resource{key}, held.Wanted())
	require.NoError(t, held.ClearWanted(t.Context(), key))
	again, err := a.Acquire(t.Context(), key)
	require.NoError(t, err)
	require.NoError(t, again.Release(t.Context()))
	require.Empty(t, again.Wanted(), "the mark was cleared on every node")

	servers[0].Stop()
	one, err := a.Acquire(t.Context(), lock.Key("one down"))
	require.NoError(t, err, "one of three down must not stop the quorum")
	isHeld, err := b.Held(t.Context(), lock.Key("one down"))
	require.NoError(t, err)
	require.True(t, isHeld, "two of three nodes hold it")
	require.NoError(t, one.Release(t.Context()))

	servers[1].Stop()
	_, err = tryOnce.Acquire(t.Context(), lock.Key("two down"))
	require.Error(t, err, "two of three down must stop the quorum")
	_, err = tryOnce.Held(t.Context(), lock.Key("two down"))
	require.Error(t, err, "without a quorum, Held cannot say")
	require.NotErrorIs(t, err, lock.ErrNotAcquired, "not a contention")
}

// A release hands a resource to a waiter of its own Locker in-process, and
// publishes only to another Locker's waiter.
func TestLocker_HandsOverInProcessWithoutPublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	publishes := func() int {
		for line := range strings.SplitSeq(rdb.Info(t.Context(), "commandstats").Val(), "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_publish:calls="); ok {
				n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				require.NoError(t, err)
				return n
			}
		}
		return 0
	}
	key := lock.Key("handover", 1)
	for _, tc := range []struct {
		name      string
		sameProc  bool
		published int
	}{{"SameLocker", true, 0}, {"OtherLocker", false, 1}} {
		require.NoError(t, rdb.ConfigResetStat(t.Context()).Err())
		holder, err := lock.New(srv.Client(t), lock.Config{Wait: 10 * time.Second, Cohort: -1})
		require.NoError(t, err)
		waiter := holder
		if !tc.sameProc {
			waiter, err = lock.New(srv.Client(t), lock.Config{Wait: 10 * time.Second})
			require.NoError(t, err)
		}
		lease, err := holder.Acquire(t.Context(), key)
		require.NoError(t, err)
		got := make(chan *lock.Lease, 1)
		go func() {
			l, err := waiter.Acquire(t.Context(), key)
			assert.NoError(t, err)
			got <- l
		}()
		waitQueued(t, rdb, lock.DefaultPrefix+"{"+key.String()+"}", 1)
		require.NoError(t, lease.Release(t.Context()))
		next := receive(t, got)
		require.Greater(t, next.Fence(key), lease.Fence(key), tc.name)
		require.Equal(t, tc.published, publishes(), tc.name)
		require.NoError(t, next.Release(t.Context()))
		require.NoError(t, holder.Close())
		require.NoError(t, waiter.Close())
	}
}

// A free resource is taken without a look at its queue, which is safe
// because a release always hands it on: only an expired holder leaves a
// queue behind a free lock, and the head's retry at the holder's TTL must
// then take it and leave the line.
func TestLocker_QueueMovesOnAfterHolderExpires(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	key := lock.Key("expired", 1)
	lockKey := lock.DefaultPrefix + "{" + key.String() + "}"
	crashed, err := lock.New(srv.Client(t), lock.Config{TTL: 300 * time.Millisecond})
	require.NoError(t, err)
	gone, err := crashed.Acquire(t.Context(), key) // never released
	require.NoError(t, err)

	waiter, err := lock.New(srv.Client(t), lock.Config{Wait: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = waiter.Close() })
	got := make(chan *lock.Lease, 1)
	go func() {
		l, err := waiter.Acquire(t.Context(), key)
		assert.NoError(t, err)
		got <- l
	}()
	waitQueued(t, rdb, lockKey, 1)
	lease := receive(t, got)
	require.Less(t, time.Since(gone.AcquiredAt()), 2*time.Second, "the waiter outwaited the expired holder by far")
	require.Greater(t, lease.Fence(key), gone.Fence(key))
	require.Zero(t, rdb.Exists(t.Context(), lockKey+":queue").Val(), "the waiter stayed in line")
	require.NoError(t, lease.Release(t.Context()))
}
