package lock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// The pause test re-executes this test binary as several lock clients. The
// child's side is pauseChild, entered from TestMain when this variable
// names a Redis address.
const pauseChildEnv = "TURNSTILE_LOCK_PAUSE_CHILD"

const (
	pauseTTL  = 200 * time.Millisecond
	pauseHold = 20 * time.Millisecond
)

// TestLocker_PausedWaiter attacks Lease.TTL's promise ("surely still held")
// the way a GC pause or SIGSTOP does: 4 processes contend for one resource
// while the test freezes one at random for 2.5 TTLs at a time, so that
// frozen waiters are handed the lock, let it expire and pass on, and resume
// with a stale grant. After each Acquire, and before each Release, a child
// asks Redis who holds the lock; a reply naming another token while the
// lease, asked after the reply came back, still claims validity is a
// violation (issue 12, item 0: 10-14 per 25 s run before the fix).
func TestLocker_PausedWaiter(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	run := 10 * time.Second
	if testing.Short() {
		run = 3 * time.Second
	}
	const procs = 4
	children := make([]*exec.Cmd, procs)
	outputs := make([]*strings.Builder, procs)
	for i := range children {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$") //nolint:gosec // the test binary itself, re-run as a child
		cmd.Env = append(os.Environ(), pauseChildEnv+"="+srv.Addr(), "TURNSTILE_LOCK_PAUSE_RUN="+run.String())
		outputs[i] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outputs[i], outputs[i]
		require.NoError(t, cmd.Start())
		children[i] = cmd
	}
	t.Cleanup(func() {
		for _, c := range children {
			_ = c.Process.Signal(syscall.SIGCONT)
			_ = c.Process.Kill()
		}
	})

	// Freeze one child at a time, and leave the last second pause-free so
	// every child ends on its own.
	end := time.Now().Add(run - time.Second)
	pauses := 0
	for time.Now().Before(end) {
		c := children[rand.N(procs)] //nolint:gosec // G404: which child to pause needs no unpredictability
		require.NoError(t, c.Process.Signal(syscall.SIGSTOP))
		time.Sleep(pauseTTL * 5 / 2) // the fault itself: a pause of a set length
		require.NoError(t, c.Process.Signal(syscall.SIGCONT))
		pauses++
		time.Sleep(time.Duration(rand.N(int64(pauseTTL)))) //nolint:gosec // G404: a gap between faults needs no unpredictability
	}

	var acquired, violations, lost, pausedWaits int
	for i, c := range children {
		err := c.Wait()
		out := outputs[i].String()
		require.NoError(t, err, "child %d:\n%s", i, out)
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			switch f[0] {
			case "violation":
				violations++
				t.Errorf("child %d: %s", i, sc.Text())
			case "totals":
				require.Len(t, f, 4, sc.Text())
				a, _ := strconv.Atoi(f[1])
				l, _ := strconv.Atoi(f[2])
				p, _ := strconv.Atoi(f[3])
				acquired += a
				lost += l
				pausedWaits += p
			}
		}
	}
	// Nothing outlives its owner: no lock, and no queue entry that a later
	// release would hand the lock to.
	rdb := srv.Client(t)
	require.Zero(t, rdb.Exists(t.Context(), lock.DefaultPrefix+"{paused}").Val(), "the lock outlived every child")
	require.Zero(t, rdb.ZCard(t.Context(), lock.DefaultPrefix+"{paused}:queue").Val(), "queue entries outlived every child")
	t.Logf("%d pauses, %d acquisitions, %d of them through a pause, %d leases lost to a pause, %d violations",
		pauses, acquired, pausedWaits, lost, violations)
	require.Positive(t, acquired)
	// The pauses must have hit waiters, or the test proved nothing.
	require.Positive(t, pausedWaits, "no pause hit a waiter")
}

// pauseChild is one contending process of TestLocker_PausedWaiter: acquire,
// check with Redis, hold briefly, check again, release, until the run ends.
func pauseChild(addr string) int {
	run, err := time.ParseDuration(os.Getenv("TURNSTILE_LOCK_PAUSE_RUN"))
	if err != nil {
		fmt.Println("bad run:", err)
		return 2
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	l, err := lock.New(rdb, lock.Config{TTL: pauseTTL, Wait: 2 * time.Second})
	if err != nil {
		fmt.Println("new:", err)
		return 2
	}
	defer l.Close()
	key := lock.Key("paused")
	lockKey := lock.DefaultPrefix + "{paused}"
	// pausedWaits counts acquisitions that took over 2 TTLs: waits a
	// pause froze (unpaused, 3 others holding 20 ms each come first).
	var acquired, lost, pausedWaits int
	// check asks Redis for the holder, then the lease for its validity:
	// Redis answered inside the validity the lease still claims.
	check := func(lease *lock.Lease, when string) {
		holder, err := rdb.Get(ctx, lockKey).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			fmt.Println("get:", err)
			return
		}
		if left := lease.TTL(); left > 0 && holder != lease.Token() {
			fmt.Printf("violation %s: fence %d claims %s more, Redis holds %q\n", when, lease.Fence(key), left, holder)
		}
	}
	for end := time.Now().Add(run); time.Now().Before(end); {
		start := time.Now()
		lease, err := l.Acquire(ctx, key)
		if time.Since(start) > 2*pauseTTL {
			pausedWaits++
		}
		if err != nil {
			if !errors.Is(err, lock.ErrNotAcquired) {
				fmt.Println("acquire:", err)
			}
			continue
		}
		acquired++
		check(lease, "after acquire")
		time.Sleep(pauseHold) // the work the lease guards
		check(lease, "before release")
		if err := lease.Release(ctx); errors.Is(err, lock.ErrNotHeld) {
			lost++
		} else if err != nil {
			fmt.Println("release:", err)
		}
	}
	fmt.Println("totals", acquired, lost, pausedWaits)
	return 0
}
