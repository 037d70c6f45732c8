package lock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// The cohort's claims (cohort.go), each tried against a real redis-server.
func TestCohort(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	// newLocker is a Locker on a client of its own: another process.
	newLocker := func(t *testing.T, cfg lock.Config) (*lock.Locker, redis.UniversalClient) {
		t.Helper()
		rdb := srv.Client(t)
		l, err := lock.New(rdb, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, l.Close()) })
		return l, rdb
	}
	// later acquires key on l in the background, once n callers of l
	// wait in line for it; each test takes a key of its own.
	later := func(t *testing.T, l *lock.Locker, key lock.Resource, n int) <-chan *lock.Lease {
		t.Helper()
		got := make(chan *lock.Lease, 1)
		go func() {
			lease, err := l.Acquire(t.Context(), key)
			if err != nil {
				t.Error(err)
			}
			got <- lease
		}()
		require.Eventually(t, func() bool { return lock.CohortWaiters(l, key) == n }, 10*time.Second, time.Millisecond)
		return got
	}

	t.Run("AReleasePassesToTheNextWaiterWithoutRedis", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "pass")
		lockKey := lock.DefaultPrefix + "{" + key.String() + "}"
		rec := &recorder{}
		l, rdb := newLocker(t, lock.Config{Wait: 10 * time.Second, Observer: rec})
		first, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		got := later(t, l, key, 1)
		require.Zero(t, rdb.Exists(t.Context(), lockKey+":queue").Val(), "a waiter of the holder's process queued in Redis")

		require.NoError(t, first.Release(t.Context()))
		second := receive(t, got)
		requireClosed(t, first.Done())
		require.Equal(t, first.Token(), second.Token())
		require.Equal(t, first.Fence(key)+1, second.Fence(key))
		require.Equal(t, second.Token(), rdb.Get(t.Context(), lockKey).Val(), "the lock left Redis")
		rec.mu.Lock()
		last := rec.acquired[len(rec.acquired)-1]
		passed := rec.released[0].Passed
		rec.mu.Unlock()
		require.True(t, last.Passed)
		require.Zero(t, last.Attempts, "a passed lease asked Redis")
		require.True(t, passed)

		// With nobody in line, the lease goes back to Redis, and the next
		// fence handed out there is above every fence of the cohort.
		require.NoError(t, second.Release(t.Context()))
		require.Zero(t, rdb.Exists(t.Context(), lockKey).Val())
		require.Zero(t, lock.Cohorts(l))
		other, _ := newLocker(t, lock.Config{})
		third, err := other.Acquire(t.Context(), key)
		require.NoError(t, err)
		require.Greater(t, third.Fence(key), second.Fence(key))
		require.NoError(t, third.Release(t.Context()))
	})

	t.Run("FencesOfPassesStayBelowTheNextFenceFromRedis", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "stride")
		lockKey := lock.DefaultPrefix + "{" + key.String() + "}"
		l, rdb := newLocker(t, lock.Config{Wait: 10 * time.Second, Cohort: lock.MaxCohort})
		// A counter far ahead of the clock: the stride, not the time,
		// decides the next fence.
		const ahead = int64(1) << 52
		require.NoError(t, rdb.Set(t.Context(), lockKey+":fence", ahead, 0).Err())
		lease, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		require.Equal(t, ahead+lock.FenceStride, lease.Fence(key))
		// MaxCohort passes in a row: the last fence is still below the
		// next one Redis hands out.
		for range lock.MaxCohort {
			got := later(t, l, key, 1)
			require.NoError(t, lease.Release(t.Context()))
			next := receive(t, got)
			require.Equal(t, lease.Fence(key)+1, next.Fence(key))
			require.Equal(t, lease.Token(), next.Token(), "passed fewer than MaxCohort times, yet asked Redis")
			lease = next
		}
		last := lease.Fence(key)
		require.NoError(t, lease.Release(t.Context()))
		other, _ := newLocker(t, lock.Config{})
		after, err := other.Acquire(t.Context(), key)
		require.NoError(t, err)
		require.Greater(t, after.Fence(key), last)
		require.NoError(t, after.Release(t.Context()))
	})

	t.Run("AfterCohortPassesTheOtherProcessesComeFirst", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "bound")
		lockKey := lock.DefaultPrefix + "{" + key.String() + "}"
		l, rdb := newLocker(t, lock.Config{Wait: 10 * time.Second, Cohort: 2})
		remote, _ := newLocker(t, lock.Config{Wait: 10 * time.Second})
		holder, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)

		var (
			mu     sync.Mutex
			order  []string
			fences []int64
			wg     sync.WaitGroup
		)
		take := func(name string, from *lock.Locker) {
			wg.Go(func() {
				lease, err := from.Acquire(t.Context(), key)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, name)
				fences = append(fences, lease.Fence(key))
				mu.Unlock()
				if err := lease.Release(t.Context()); err != nil {
					t.Error(err)
				}
			})
		}
		take("remote", remote)
		waitQueued(t, rdb, lockKey, 1)
		for i, name := range []string{"local1", "local2", "local3"} {
			take(name, l)
			require.Eventually(t, func() bool { return lock.CohortWaiters(l, key) == i+1 }, 10*time.Second, time.Millisecond)
		}
		require.NoError(t, holder.Release(t.Context()))
		wg.Wait()
		require.Equal(t, []string{"local1", "local2", "remote", "local3"}, order)
		require.True(t, slices.IsSorted(fences) && len(slices.Compact(slices.Clone(fences))) == len(fences), "fences %v", fences)
	})

	t.Run("ALostLeaseIsNotPassed", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "lost")
		l, _ := newLocker(t, lock.Config{TTL: 150 * time.Millisecond, Wait: 10 * time.Second})
		first, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		got := later(t, l, key, 1)
		// The holder never releases: its loss hands the lead on, and the
		// waiter takes the resource from Redis once the lock expired.
		<-first.Done()
		next := receive(t, got)
		require.NotEqual(t, first.Token(), next.Token(), "a lost lease was passed")
		require.Greater(t, next.Fence(key), first.Fence(key))
		require.ErrorIs(t, first.Release(t.Context()), lock.ErrNotHeld)
		require.NoError(t, next.Release(t.Context()))
	})

	t.Run("APassWithLittleValidityLeftExtendsTheLock", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "extend")
		lockKey := lock.DefaultPrefix + "{" + key.String() + "}"
		const ttl = 400 * time.Millisecond
		l, rdb := newLocker(t, lock.Config{TTL: ttl, Wait: 10 * time.Second})
		first, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		got := later(t, l, key, 1)
		time.Sleep(ttl * 2 / 3) // under half the TTL left
		require.NoError(t, first.Release(t.Context()))
		next := receive(t, got)
		require.Equal(t, first.Token(), next.Token())
		require.Greater(t, next.TTL(), ttl/2)
		require.Greater(t, rdb.PTTL(t.Context(), lockKey).Val(), ttl/2, "the lease counts validity Redis did not give")
		require.NoError(t, next.Release(t.Context()))
	})

	t.Run("TryingOnceFindsTheLocalHolderWithoutRedis", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "try")
		rec := &recorder{}
		l, _ := newLocker(t, lock.Config{Observer: rec})
		holder, err := l.With(lock.Options{Owner: "payment:confirm/t-1"})
		require.NoError(t, err)
		lease, err := holder.Acquire(t.Context(), key)
		require.NoError(t, err)
		_, err = l.Acquire(t.Context(), key)
		busy, ok := errors.AsType[*lock.BusyError](err)
		require.True(t, ok, "%v", err)
		require.Equal(t, "payment:confirm/t-1", busy.Owner)
		require.Positive(t, busy.TTL)
		rec.mu.Lock()
		attempts := rec.acquired[1].Attempts
		rec.mu.Unlock()
		require.Zero(t, attempts)
		require.NoError(t, lease.Release(t.Context()))
	})

	t.Run("CloseEndsTheWaitInLine", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "close")
		rdb := srv.Client(t)
		l, err := lock.New(rdb, lock.Config{Wait: time.Minute})
		require.NoError(t, err)
		lease, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		waited := make(chan error, 1)
		go func() {
			_, err := l.Acquire(t.Context(), key)
			waited <- err
		}()
		require.Eventually(t, func() bool { return lock.CohortWaiters(l, key) == 1 }, 10*time.Second, time.Millisecond)
		require.NoError(t, l.Close())
		require.ErrorIs(t, receive(t, waited), lock.ErrClosed)
		require.NoError(t, lease.Release(t.Context()))
		require.Zero(t, lock.Cohorts(l))
	})

	t.Run("PassesReportLocalWantedMarks", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "wanted")
		l, _ := newLocker(t, lock.Config{Wait: 10 * time.Second})
		lease, err := l.Acquire(t.Context(), key)
		require.NoError(t, err)
		held, err := l.Want(t.Context(), key, time.Minute)
		require.NoError(t, err)
		require.True(t, held)
		for _, want := range [][]lock.Resource{{key}, nil} {
			got := later(t, l, key, 1)
			require.NoError(t, lease.Release(t.Context()))
			require.Equal(t, want, lease.Wanted())
			// Cleared once told: the next pass does not report it.
			for _, r := range lease.Wanted() {
				require.NoError(t, lease.ClearWanted(t.Context(), r))
			}
			lease = receive(t, got)
		}
		// Back to Redis, whose mark Want also set.
		require.NoError(t, lease.Release(t.Context()))
		require.Equal(t, []lock.Resource{key}, lease.Wanted())
	})

	// Real contention: two processes of eight callers each, short holds,
	// budgets that run out in line, and one holder at a time throughout,
	// with fences that grow in the order the holders held.
	t.Run("OneHolderAtATimeAndFencesGrow", func(t *testing.T) {
		t.Parallel()
		key := lock.Key("cohort", "contention")
		var (
			inside  atomic.Int32
			mu      sync.Mutex
			fences  []int64
			passed  atomic.Int64
			gaveUp  atomic.Int64
			lockers []*lock.Locker
		)
		obs := &passCounter{passed: &passed}
		for range 2 {
			l, _ := newLocker(t, lock.Config{TTL: 2 * time.Second, Wait: 5 * time.Second, Cohort: 4, Observer: obs})
			lockers = append(lockers, l)
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				l := lockers[i%2]
				for range 25 {
					budget := 5 * time.Second
					if rand.N(4) == 0 { //nolint:gosec // G404: which callers give up needs no unpredictability
						budget = time.Duration(rand.N(3)+1) * time.Millisecond //nolint:gosec // G404: as above
					}
					w, err := l.With(lock.Options{TTL: 2 * time.Second, Wait: budget, Cohort: 4})
					if err != nil {
						t.Error(err)
						return
					}
					lease, err := w.Acquire(t.Context(), key)
					if _, busy := errors.AsType[*lock.BusyError](err); busy {
						gaveUp.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if inside.Add(1) != 1 {
						t.Error("two holders at once")
					}
					mu.Lock()
					fences = append(fences, lease.Fence(key))
					mu.Unlock()
					time.Sleep(time.Duration(rand.N(300)) * time.Microsecond) //nolint:gosec // G404: a hold time needs no unpredictability
					inside.Add(-1)
					if err := lease.Release(t.Context()); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		for i := 1; i < len(fences); i++ {
			require.Greater(t, fences[i], fences[i-1], "fence %d of %d went back", i, len(fences))
		}
		require.Positive(t, passed.Load(), "nothing was passed")
		t.Logf("%d leases, %d passed, %d gave up in line", len(fences), passed.Load(), gaveUp.Load())
		for _, l := range lockers {
			require.Zero(t, lock.Cohorts(l), "a cohort outlived its callers")
		}
		requireFree(t, srv.Client(t), key)
	})
}

// passCounter counts passed leases.
type passCounter struct {
	passed *atomic.Int64
}

func (c *passCounter) Acquired(_ context.Context, ev lock.AcquireEvent) {
	if ev.Passed {
		c.passed.Add(1)
	}
}
func (*passCounter) Released(context.Context, lock.ReleaseEvent) {}
func (*passCounter) Lost(context.Context, lock.LostEvent)        {}
