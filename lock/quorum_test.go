package lock

// These tests are inside the package so that a fault can be aimed at one
// script, the fence write-back, on one node.

import (
	"context"
	"crypto/sha1" //nolint:gosec // G505: Redis names scripts by SHA-1; this only matches one
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/keyslot"
	"github.com/turnstilehq/turnstile/internal/redistest"
)

var errFault = errors.New("node unreachable (simulated)")

// fault makes a client fail, before anything reaches Redis, either every
// command (down: a partition, the node keeps its data) or only the fence
// write-back (noRaise). It counts the write-backs sent (EVALSHA, which each
// starts with; an EVAL follows only when the server lacks the script).
type fault struct {
	down, noRaise atomic.Bool
	raises        atomic.Int32
}

func (f *fault) hits(cmd redis.Cmder) bool {
	if f.down.Load() {
		return true
	}
	if !isRaise(cmd) {
		return false
	}
	if strings.EqualFold(cmd.Name(), "evalsha") {
		f.raises.Add(1)
	}
	return f.noRaise.Load()
}

// isRaise reports whether cmd runs raiseFenceScript.
func isRaise(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	body, _ := args[1].(string)
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		return body == raiseFenceScript.Hash()
	case "eval":
		sum := sha1.Sum([]byte(body)) //nolint:gosec // G401: see the import
		return hex.EncodeToString(sum[:]) == raiseFenceScript.Hash()
	}
	return false
}

func (f *fault) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *fault) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.hits(cmd) {
			cmd.SetErr(errFault)
			return errFault
		}
		return next(ctx, cmd)
	}
}

func (f *fault) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if f.hits(cmd) {
				for _, c := range cmds {
					c.SetErr(errFault)
				}
				return errFault
			}
		}
		return next(ctx, cmds)
	}
}

// quorumBundle is three real redis-servers, a client to each, and a fault
// switch per client.
type quorumBundle struct {
	servers []*redistest.Process
	clients []*redis.Client
	faults  []*fault
}

func setupQuorum(t *testing.T) *quorumBundle {
	t.Helper()
	b := &quorumBundle{}
	for range 3 {
		s := redistest.Server(t)
		// A node that is down fails at once instead of being retried for
		// seconds, as a quorum wants.
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
		t.Cleanup(func() { _ = c.Close() })
		// Every script call's keys must share a Cluster slot.
		redistest.CheckSlots(t, c)
		f := &fault{}
		c.AddHook(f)
		b.servers = append(b.servers, s)
		b.clients = append(b.clients, c)
		b.faults = append(b.faults, f)
	}
	return b
}

func (b *quorumBundle) locker(t *testing.T, cfg Config) *Locker {
	t.Helper()
	clients := make([]redis.UniversalClient, len(b.clients))
	for i, c := range b.clients {
		clients[i] = c
	}
	l, err := NewQuorum(clients, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

// counters returns r's fence counter on each node, 0 where it is missing
// or the node does not answer.
func (b *quorumBundle) counters(ctx context.Context, t *testing.T, r Resource) []int64 {
	t.Helper()
	fk := r.redisKeys(DefaultPrefix).fence
	out := make([]int64, len(b.clients))
	for i, c := range b.clients {
		if b.faults[i].down.Load() || b.servers[i].Pid() == 0 {
			continue
		}
		out[i], _ = c.Get(ctx, fk).Int64()
	}
	return out
}

// Issue 12, item 2. Counters drift apart: an attempt that wins only a
// minority bumps the counters it won, and a node that lost its data starts
// over from its clock. A lease's fence is the largest among the nodes it
// won, and must be larger than every earlier lease's, whichever majority
// each won, across partitions (the node keeps its counter) and crashes
// (it loses it).
func TestQuorum_FencesOnlyGrow(t *testing.T) {
	t.Parallel()
	t.Run("OneResource", func(t *testing.T) {
		t.Parallel()
		testFencesOnlyGrow(t, false, Key("fences only grow"))
	})
	// Two resources whose largest fences come from different nodes, on
	// nodes that take them one slot at a time, as on Redis Cluster.
	t.Run("TwoSlots", func(t *testing.T) {
		t.Parallel()
		rs := []Resource{Key("fences only grow", 1), Key("fences only grow", 2)}
		require.NotEqual(t, keyslot.Of(rs[0].redisKeys(DefaultPrefix).lock), keyslot.Of(rs[1].redisKeys(DefaultPrefix).lock))
		testFencesOnlyGrow(t, true, rs...)
	})
}

func testFencesOnlyGrow(t *testing.T, sharded bool, rs ...Resource) {
	t.Helper()
	b := setupQuorum(t)
	l := b.locker(t, Config{TTL: 5 * time.Second})
	for _, n := range l.shared.nodes {
		n.sharded = sharded
	}
	ctx := t.Context()

	last := make([]int64, len(rs))
	grow := func(step string) {
		t.Helper()
		lease, err := l.Acquire(ctx, rs...)
		require.NoError(t, err, step)
		for i, r := range rs {
			f := lease.Fence(r)
			require.Greater(t, f, last[i], "%s: %s's fence went backwards; counters now %v", step, r, b.counters(ctx, t, r))
			last[i] = f
		}
		require.NoError(t, lease.Release(ctx), step)
	}
	partition := func(i int, down bool) { b.faults[i].down.Store(down) }

	grow("first acquisition, every node up")

	// Another holder has the first resource on nodes 1 and 2: attempts
	// win node 0 alone, bump its counters and give them back.
	first := rs[0].redisKeys(DefaultPrefix).lock
	for _, c := range b.clients[1:] {
		require.NoError(t, c.Set(ctx, first, "someone else", 0).Err())
	}
	for range 5 {
		_, err := l.Acquire(ctx, rs...)
		require.ErrorIs(t, err, ErrNotAcquired)
	}
	for _, c := range b.clients[1:] {
		require.NoError(t, c.Del(ctx, first).Err())
	}
	// And node 0 once restarted with its clock an hour ahead (node 1, for
	// the last resource when there are several).
	skewed := rs[len(rs)-1]
	node := min(len(rs)-1, 1)
	require.NoError(t, b.clients[node].IncrBy(ctx, skewed.redisKeys(DefaultPrefix).fence, int64(time.Hour/time.Microsecond)).Err())
	for _, r := range rs {
		t.Logf("%s: counters after the skew: %v", r, b.counters(ctx, t, r))
	}

	// The sequence: X wins {0, 1} with the skewed node's high
	// fence, then Z wins {1, 2}, and {0, 2}.
	partition(2, true)
	grow("X wins {0, 1}")
	partition(2, false)
	partition(0, true)
	grow("Z wins {1, 2}")
	partition(0, false)
	partition(1, true)
	grow("{0, 2} while 1 is cut off")
	partition(1, false)
	grow("every node up again")

	// Crashes: a node comes back empty and starts its counter from its
	// clock.
	for i := range b.servers {
		b.servers[i].Stop()
		grow("node " + string(rune('0'+i)) + " crashed")
		b.servers[i].Start()
		grow("node " + string(rune('0'+i)) + " back, empty")
	}

	// A partition after a crash: the restarted node's counter is the one
	// that lags or leads.
	partition(1, true)
	grow("{0, 2} while 1 is cut off")
	partition(1, false)
	partition(2, true)
	grow("{0, 1} while 2 is cut off")
	partition(2, false)
}

// A lease is returned only when a majority of nodes carry its fence: a node
// whose write-back failed does not count.
func TestQuorum_FenceWriteBack(t *testing.T) {
	t.Parallel()

	// skew makes node 0's counter for r run an hour ahead of the others'.
	skew := func(t *testing.T, b *quorumBundle, l *Locker, r Resource) {
		t.Helper()
		lease, err := l.Acquire(t.Context(), r)
		require.NoError(t, err)
		require.NoError(t, lease.Release(t.Context()))
		fk := r.redisKeys(DefaultPrefix).fence
		require.NoError(t, b.clients[0].IncrBy(t.Context(), fk, int64(time.Hour/time.Microsecond)).Err())
	}

	// Once the counters agree, which an acquisition that won every node
	// makes them, no write-back is sent.
	t.Run("OnlyWhenBehind", func(t *testing.T) {
		t.Parallel()
		b := setupQuorum(t)
		l := b.locker(t, Config{TTL: 5 * time.Second})
		r := Key("write-back only when behind")
		skew(t, b, l, r)
		raises := func() (n int32) {
			for _, f := range b.faults {
				n += f.raises.Swap(0)
			}
			return n
		}
		raises()
		for i, want := range []int32{2, 0, 0} {
			lease, err := l.Acquire(t.Context(), r)
			require.NoError(t, err)
			require.NoError(t, lease.Release(t.Context()))
			require.Equal(t, want, raises(), "acquisition %d", i+1)
		}
	})

	t.Run("FailsOnMajority", func(t *testing.T) {
		t.Parallel()
		b := setupQuorum(t)
		l := b.locker(t, Config{TTL: 5 * time.Second})
		r := Key("write-back fails on a majority")
		skew(t, b, l, r)

		b.faults[1].noRaise.Store(true)
		b.faults[2].noRaise.Store(true)
		lease, err := l.Acquire(t.Context(), r)
		if lease != nil {
			t.Fatalf("a lease with fence %d came back although only node 0 carries it; counters %v",
				lease.Fence(r), b.counters(t.Context(), t, r))
		}
		require.ErrorIs(t, err, errFault)
		require.NotErrorIs(t, err, ErrNotAcquired, "not a contention")
		held, err := l.Held(t.Context(), r)
		require.NoError(t, err)
		require.False(t, held, "the failed attempt gave back what it took")
	})

	t.Run("FailsOnOne", func(t *testing.T) {
		t.Parallel()
		b := setupQuorum(t)
		l := b.locker(t, Config{TTL: 5 * time.Second})
		r := Key("write-back fails on one")
		skew(t, b, l, r)

		b.faults[1].noRaise.Store(true)
		lease, err := l.Acquire(t.Context(), r)
		require.NoError(t, err, "nodes 0 and 2 carry the fence: a majority")
		first := lease.Fence(r)
		require.NoError(t, lease.Release(t.Context()))
		b.faults[1].noRaise.Store(false)

		// Nodes 1 and 2 are a majority too, and node 2 carries the fence.
		b.faults[0].down.Store(true)
		lease, err = l.Acquire(t.Context(), r)
		require.NoError(t, err)
		require.Greater(t, lease.Fence(r), first, "counters %v", b.counters(t.Context(), t, r))
		require.NoError(t, lease.Release(t.Context()))
	})
}

// Issue 12, item 13. Wait is how long a quorum Acquire waits, as in
// single-node mode: it tries once more at the deadline, so it catches a
// holder that releases just before it, and it gives up only then.
func TestQuorum_WaitUsesWholeBudget(t *testing.T) {
	t.Parallel()
	b := setupQuorum(t)
	holders := b.locker(t, Config{TTL: 10 * time.Second})

	t.Run("HolderReleasesAt95Percent", func(t *testing.T) {
		t.Parallel()
		const wait = time.Second
		waiter := b.locker(t, Config{TTL: 10 * time.Second, Wait: wait})
		// Three rounds at once, on keys of their own: each must catch the
		// release.
		for i := range 3 {
			t.Run("Round"+string(rune('1'+i)), func(t *testing.T) {
				t.Parallel()
				r := Key("release at 95 percent", i)
				held, err := holders.Acquire(t.Context(), r)
				require.NoError(t, err)
				released := make(chan time.Duration, 1)
				start := time.Now()
				timer := time.AfterFunc(wait*95/100, func() {
					err := held.Release(context.Background())
					if err != nil {
						t.Errorf("release: %v", err)
					}
					released <- time.Since(start)
				})
				defer timer.Stop()
				lease, err := waiter.Acquire(t.Context(), r)
				took := time.Since(start)
				at := receive(t, released)
				require.NoError(t, err, "gave up after %s of %s; the holder released at %s", took, wait, at)
				require.Greater(t, lease.Fence(r), held.Fence(r))
				require.NoError(t, lease.Release(t.Context()))
			})
		}
	})

	t.Run("HolderNeverReleases", func(t *testing.T) {
		t.Parallel()
		const wait = 300 * time.Millisecond
		waiter := b.locker(t, Config{TTL: 10 * time.Second, Wait: wait})
		r := Key("never released")
		held, err := holders.Acquire(t.Context(), r)
		require.NoError(t, err)
		defer func() { require.NoError(t, held.Release(context.Background())) }()
		for range 3 {
			start := time.Now()
			_, err := waiter.Acquire(t.Context(), r)
			took := time.Since(start)
			t.Logf("gave up after %s of %s", took, wait)
			require.ErrorIs(t, err, ErrNotAcquired)
			require.GreaterOrEqual(t, took, wait, "gave up early")
			// The last try and giving back are a few round trips; a full
			// backoff step past the deadline would be 128-512 ms here.
			require.Less(t, took, wait+100*time.Millisecond, "waited too long")
		}
	})
}

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
