package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

func TestLocker_Holdings(t *testing.T) {
	t.Parallel()
	t.Run("Miniredis", func(t *testing.T) {
		t.Parallel()
		testHoldings(t, holdingsBackend{
			client: func(t *testing.T) redis.UniversalClient {
				t.Helper()
				_, rdb := redistest.MiniClient(t)
				return rdb
			},
			onePage: true, // miniredis answers a SCAN with every key at once
		})
	})
	t.Run("Redis", func(t *testing.T) {
		t.Parallel()
		testHoldings(t, holdingsBackend{
			client: func(t *testing.T) redis.UniversalClient {
				t.Helper()
				return redistest.Server(t).Client(t)
			},
		})
	})
}

// holdingsBackend is one kind of Redis the operator API is tested on.
type holdingsBackend struct {
	// client starts a server of its own and returns a client to it.
	client func(t *testing.T) redis.UniversalClient
	// onePage is set when SCAN ignores COUNT and returns every key at once.
	onePage bool
}

type holdingsBundle struct {
	rdb    redis.UniversalClient
	locker *lock.Locker
}

func testHoldings(t *testing.T, hb holdingsBackend) {
	t.Helper()
	setup := func(t *testing.T) *holdingsBundle {
		t.Helper()
		rdb := hb.client(t)
		return &holdingsBundle{rdb: rdb, locker: newTestLocker(t, rdb, lock.Config{TTL: time.Minute})}
	}
	const ttl = holdingTTL

	t.Run("HoldingsListsEachLockOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		want := make(map[string]lock.Holding)
		for i := range 25 {
			r := lock.Key("order", fmt.Sprintf("o-%d", i))
			owner := ""
			if i > 0 { // o-0 tells nobody who holds it
				owner = fmt.Sprintf("payment:confirm/task-%d", i)
			}
			lease := acquireAs(t, b.locker, owner, r)
			want[r.String()] = lock.Holding{Resource: r.String(), Owner: owner, Fence: lease.Fence(r)}
		}
		// A resource locked once and released leaves its fence counter.
		gone := acquireAs(t, b.locker, "", lock.Key("order", "gone"))
		require.NoError(t, gone.Release(ctx))
		// The same resource under another prefix is another lock.
		otherPrefix := newTestLocker(t, b.rdb, lock.Config{Prefix: "other:"})
		acquireAs(t, otherPrefix, "elsewhere", lock.Key("order", "o-1"))
		// A waiter makes a queue key exist.
		waitCtx, stopWaiting := context.WithCancel(ctx)
		waited := make(chan error, 1)
		go func() {
			waiter, err := b.locker.With(lock.Options{Wait: time.Minute, Cohort: -1})
			if err == nil {
				_, err = waiter.Acquire(waitCtx, lock.Key("order", "o-0"))
			}
			waited <- err
		}()
		waitQueued(t, b.rdb, lock.DefaultPrefix+"{order:o-0}", 1)
		require.Equal(t, int64(2), b.rdb.Exists(ctx, lock.DefaultPrefix+"{order:o-0}:queue", lock.DefaultPrefix+"{order:gone}:fence").Val())

		got, pages := allHoldings(t, b.locker, 5)
		if !hb.onePage {
			require.Greater(t, pages, 1, "a COUNT of 5 returned 25 locks in one page")
		}
		require.Len(t, got, len(want))
		for name, w := range want {
			h, ok := got[name]
			require.True(t, ok, "%s is missing", name)
			require.Greater(t, h.TTL, time.Duration(0), name)
			require.LessOrEqual(t, h.TTL, ttl, name)
			h.TTL = 0
			require.Equal(t, w, h)
		}

		other, _ := allHoldings(t, otherPrefix, 5)
		require.Len(t, other, 1)
		require.Equal(t, "elsewhere", other["order:o-1"].Owner)

		stopWaiting()
		require.ErrorIs(t, receive(t, waited), context.Canceled)
	})

	t.Run("HoldingReportsTheHolder", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		r := lock.Key("ticket_type", "t:1", "inventory") // a part with an escaped ':'
		_, err := b.locker.Holding(ctx, r.String())
		require.ErrorIs(t, err, lock.ErrNotHeld)

		lease := acquireAs(t, b.locker, "payment:refund/task-9", r)
		h, err := b.locker.Holding(ctx, r.String())
		require.NoError(t, err)
		require.Equal(t, "ticket_type:t%3A1:inventory", h.Resource)
		require.Equal(t, "payment:refund/task-9", h.Owner)
		require.Equal(t, lease.Fence(r), h.Fence)
		require.Greater(t, h.TTL, time.Duration(0))
		require.LessOrEqual(t, h.TTL, ttl)
		require.NotContains(t, fmt.Sprint(h), lease.Token()[:26], "the holder's secret leaked")

		_, err = b.locker.Holding(ctx, "order:{42}")
		require.Error(t, err)
		require.NotErrorIs(t, err, lock.ErrNotHeld)
		_, err = b.locker.Holding(ctx, "")
		require.Error(t, err)

		require.NoError(t, lease.Release(ctx))
		_, err = b.locker.Holding(ctx, r.String())
		require.ErrorIs(t, err, lock.ErrNotHeld)
	})

	t.Run("ForceReleaseChecksTheFence", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		r := lock.Key("order", "stuck")
		lockKey := lock.DefaultPrefix + "{order:stuck}"
		require.ErrorIs(t, b.locker.ForceRelease(ctx, r.String(), 1), lock.ErrNotHeld)

		// The stuck holder refreshes, so it finds out when its lock is gone.
		refreshing, err := b.locker.With(lock.Options{TTL: 300 * time.Millisecond, Refresh: true, Owner: "stuck-worker"})
		require.NoError(t, err)
		stuck, err := refreshing.Acquire(ctx, r)
		require.NoError(t, err)
		fence := stuck.Fence(r)
		for _, wrong := range []int64{fence - 1, fence + 1, 0} {
			err := b.locker.ForceRelease(ctx, r.String(), wrong)
			require.ErrorIs(t, err, lock.ErrFenceMismatch, "fence %d", wrong)
			require.NotErrorIs(t, err, lock.ErrNotHeld)
		}
		require.Equal(t, stuck.Token(), b.rdb.Get(ctx, lockKey).Val(), "a wrong fence released the lock")
		require.NoError(t, stuck.Err())

		require.NoError(t, b.locker.ForceRelease(ctx, r.String(), fence))
		require.Zero(t, b.rdb.Exists(ctx, lockKey).Val(), "the lock is still there")
		receiveDone(t, stuck)
		require.ErrorIs(t, stuck.Err(), lock.ErrNotHeld)
		require.ErrorIs(t, stuck.Release(ctx), lock.ErrNotHeld)
		require.ErrorIs(t, b.locker.ForceRelease(ctx, r.String(), fence), lock.ErrNotHeld)

		again := acquireAs(t, b.locker, "", r)
		require.Greater(t, again.Fence(r), fence, "the next holder's writes would be refused")
		require.NoError(t, again.Release(ctx))
	})

	t.Run("ForceReleaseServesTheNextWaiter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		r := lock.Key("order", "o-1")
		lockKey := lock.DefaultPrefix + "{order:o-1}"
		stuck := acquireAs(t, b.locker, "stuck-worker", r)

		// The waiter is another process: its own client and subscription.
		next, err := newTestLocker(t, b.rdb, lock.Config{}).With(lock.Options{TTL: ttl, Wait: time.Minute, Owner: "next-worker"})
		require.NoError(t, err)
		got := make(chan *lock.Lease, 1)
		go func() {
			lease, err := next.Acquire(ctx, r)
			if err != nil {
				t.Error(err)
			}
			got <- lease
		}()
		waitQueued(t, b.rdb, lockKey, 1)

		require.ErrorIs(t, b.locker.ForceRelease(ctx, r.String(), stuck.Fence(r)+1), lock.ErrFenceMismatch)
		require.NoError(t, b.locker.ForceRelease(ctx, r.String(), stuck.Fence(r)))
		lease := receive(t, got)
		require.NotNil(t, lease)
		require.Greater(t, lease.Fence(r), stuck.Fence(r))
		h, err := b.locker.Holding(ctx, r.String())
		require.NoError(t, err)
		require.Equal(t, "next-worker", h.Owner)
		require.Equal(t, lease.Fence(r), h.Fence)

		require.ErrorIs(t, stuck.Release(ctx), lock.ErrNotHeld)
		require.Equal(t, lease.Token(), b.rdb.Get(ctx, lockKey).Val(), "the stuck holder's release removed the new lock")
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("OtherPrefixesStayApart", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx := t.Context()
		// Unescaped, "a*:" would match "ab:" as a SCAN pattern.
		star := newTestLocker(t, b.rdb, lock.Config{Prefix: "a*:"})
		ab := newTestLocker(t, b.rdb, lock.Config{Prefix: "ab:"})
		r := lock.Key("order", 1)
		mine := acquireAs(t, star, "star", r)
		theirs := acquireAs(t, ab, "ab", lock.Key("order", 2))

		got, _ := allHoldings(t, star, 5)
		require.Len(t, got, 1)
		require.Equal(t, "star", got["order:1"].Owner)
		got, _ = allHoldings(t, b.locker, 5)
		require.Empty(t, got, "the default prefix holds nothing")

		_, err := b.locker.Holding(ctx, r.String())
		require.ErrorIs(t, err, lock.ErrNotHeld)
		require.ErrorIs(t, ab.ForceRelease(ctx, r.String(), mine.Fence(r)), lock.ErrNotHeld)
		require.NoError(t, star.ForceRelease(ctx, r.String(), mine.Fence(r)))
		require.ErrorIs(t, mine.Release(ctx), lock.ErrNotHeld)
		require.NoError(t, theirs.Release(ctx))
	})
}

func TestLocker_HoldingsQuorum(t *testing.T) {
	t.Parallel()
	t.Run("Miniredis", func(t *testing.T) {
		t.Parallel()
		testHoldingsQuorum(t, func(t *testing.T) ([]redis.UniversalClient, func(i int)) {
			t.Helper()
			var (
				clients []redis.UniversalClient
				servers []func()
			)
			for range 3 {
				mr, _ := redistest.MiniClient(t)
				clients = append(clients, quorumClient(t, mr.Addr()))
				servers = append(servers, mr.Close)
			}
			return clients, func(i int) { servers[i]() }
		})
	})
	t.Run("Redis", func(t *testing.T) {
		t.Parallel()
		testHoldingsQuorum(t, func(t *testing.T) ([]redis.UniversalClient, func(i int)) {
			t.Helper()
			servers := []*redistest.Process{redistest.Server(t), redistest.Server(t), redistest.Server(t)}
			clients := make([]redis.UniversalClient, len(servers))
			for i, s := range servers {
				clients[i] = quorumClient(t, s.Addr())
			}
			return clients, func(i int) { servers[i].Stop() }
		})
	})
}

// testHoldingsQuorum runs the operator API over three nodes; stop(i) kills
// node i.
func testHoldingsQuorum(t *testing.T, nodes func(t *testing.T) (clients []redis.UniversalClient, stop func(i int))) {
	t.Helper()
	ctx := t.Context()
	clients, stop := nodes(t)
	const ttl = holdingTTL
	l, err := lock.NewQuorum(clients, lock.Config{TTL: ttl})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	a, b := lock.Key("order", "q-a"), lock.Key("order", "q-b")
	leaseA := acquireAs(t, l, "refunds", a)
	leaseB := acquireAs(t, l, "", b)
	var extra []lock.Resource
	for i := range 6 {
		extra = append(extra, lock.Key("order", fmt.Sprintf("q-%d", i)))
		acquireAs(t, l, "", extra[i])
	}

	h, err := l.Holding(ctx, a.String())
	require.NoError(t, err)
	require.Equal(t, "refunds", h.Owner)
	require.Greater(t, h.TTL, time.Duration(0))
	require.LessOrEqual(t, h.TTL, ttl)
	require.Positive(t, h.Fence)
	require.LessOrEqual(t, h.Fence, leaseA.Fence(a), "one node's counter is at most the lease's fence")
	got, _ := allHoldings(t, l, 2)
	require.Len(t, got, 8)

	// Counters start at each server's clock in µs, so 1 matches no node.
	require.ErrorIs(t, l.ForceRelease(ctx, a.String(), 1), lock.ErrFenceMismatch)
	held, err := l.Held(ctx, a)
	require.NoError(t, err)
	require.True(t, held, "a wrong fence released the lock")
	require.NoError(t, l.ForceRelease(ctx, a.String(), leaseA.Fence(a)))
	held, err = l.Held(ctx, a)
	require.NoError(t, err)
	require.False(t, held)
	require.ErrorIs(t, leaseA.Release(ctx), lock.ErrNotHeld)
	require.ErrorIs(t, l.ForceRelease(ctx, a.String(), leaseA.Fence(a)), lock.ErrNotHeld)

	// With the first node down, reads go to the next one, and a majority
	// still releases.
	stop(0)
	got, _ = allHoldings(t, l, 2)
	require.Len(t, got, 7)
	h, err = l.Holding(ctx, b.String())
	require.NoError(t, err)
	require.LessOrEqual(t, h.Fence, leaseB.Fence(b))
	require.NoError(t, l.ForceRelease(ctx, b.String(), h.Fence), "a Holding's fence names the holder too")
	held, err = l.Held(ctx, b)
	require.NoError(t, err)
	require.False(t, held)
	require.ErrorIs(t, leaseB.Release(ctx), lock.ErrNotHeld)
}

// quorumClient returns a client to addr that gives up at once on a node
// that is down, as a quorum wants, instead of retrying for seconds.
func quorumClient(t *testing.T, addr string) redis.UniversalClient {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newTestLocker returns a Locker on rdb that is closed when the test ends.
func newTestLocker(t *testing.T, rdb redis.UniversalClient, cfg lock.Config) *lock.Locker {
	t.Helper()
	l, err := lock.New(rdb, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

// holdingTTL is the TTL of the leases acquireAs takes: long enough that
// none expires while a test looks at it.
const holdingTTL = time.Minute

// acquireAs acquires r on l as owner, for holdingTTL, and releases it when the test
// ends unless the test did.
func acquireAs(t *testing.T, l *lock.Locker, owner string, r lock.Resource) *lock.Lease {
	t.Helper()
	as, err := l.With(lock.Options{TTL: holdingTTL, Owner: owner})
	require.NoError(t, err)
	lease, err := as.Acquire(t.Context(), r)
	require.NoError(t, err)
	t.Cleanup(func() {
		// ErrNotHeld: the test force-released it.
		if err := lease.Release(context.Background()); err != nil && !errors.Is(err, lock.ErrNotHeld) {
			t.Errorf("release %s: %v", r, err)
		}
	})
	return lease
}

// allHoldings pages through l's holdings, count at a time, and returns them
// by resource name with the number of pages it took. SCAN may return a key
// on two pages; both must tell the same.
func allHoldings(t *testing.T, l *lock.Locker, count int64) (map[string]lock.Holding, int) {
	t.Helper()
	got := make(map[string]lock.Holding)
	var cursor uint64
	for pages := 1; ; pages++ {
		page, next, err := l.Holdings(t.Context(), cursor, count)
		require.NoError(t, err)
		for _, h := range page {
			if seen, ok := got[h.Resource]; ok {
				require.Equal(t, seen.Fence, h.Fence, "%s changed between pages", h.Resource)
			}
			got[h.Resource] = h
		}
		if next == 0 {
			return got, pages
		}
		require.Less(t, pages, 1000, "the scan does not end")
		cursor = next
	}
}
