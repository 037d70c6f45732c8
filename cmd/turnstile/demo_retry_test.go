package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

// refused is the error a client sees while a failover has no master up.
func refused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

// flakyStore is a ledger whose first fails reads of a ticket type fail as
// a Redis going away does. A checkout reads each of its ticket types
// twice: for the order's event, then fenced for the availability.
type flakyStore struct {
	jobs.Store
	mu     sync.Mutex
	fails  int
	failed int // reads that failed
	read   int // reads that succeeded
}

func (s *flakyStore) TicketType(ctx context.Context, id string, fences ...ledger.Fence) (ledger.TicketType, int64, error) {
	s.mu.Lock()
	fail := s.fails > 0
	if fail {
		s.fails--
		s.failed++
	} else {
		s.read++
	}
	s.mu.Unlock()
	if fail {
		return ledger.TicketType{}, 0, fmt.Errorf("ledger: ticket type %s: %w", id, refused())
	}
	return s.Store.TicketType(ctx, id, fences...)
}

// newFlakyLoad is a demo load on a miniredis whose ledger fails fails
// times, selling one ticket type of the given capacity under the
// inventory locks, as the demo does (without them concurrent checkouts
// oversell, which is -no-lock's point).
func newFlakyLoad(t *testing.T, fails int, capacity int64) (*demoLoad, *flakyStore, []ledger.TicketType) {
	t.Helper()
	_, rdb := redistest.MiniClient(t)
	store := ledger.New(rdb, "test:ledger:")
	types := []ledger.TicketType{{ID: "run1-floor", Event: "arena", Name: "Floor", Capacity: capacity, Price: 3_900, Currency: "EUR"}}
	require.NoError(t, store.AddTicketType(t.Context(), types[0]))
	flaky := &flakyStore{Store: store, fails: fails}
	client := asynq.NewClientFromRedisClient(rdb)
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second})
	require.NoError(t, err)
	l := &demoLoad{
		svc:   &jobs.Service{Store: flaky, Client: client, Locker: locker, PaymentWindow: time.Hour},
		store: store, inspect: asynq.NewInspectorFromRedisClient(rdb),
		rand: rand.New(rand.NewPCG(1, 2)), stats: newDemoStats(), runID: "run1", //nolint:gosec // G404: a test's seeded workload.
	}
	return l, flaky, types
}

// Issue 16: the load's checkouts ride out connection errors, as a client
// riding out a failover would: each is tried again, after a growing wait,
// and every order is reserved once.
func TestDemoLoad_CheckoutsRetryThroughConnectionErrors(t *testing.T) {
	t.Parallel()
	l, flaky, types := newFlakyLoad(t, 3, 1000)
	start := time.Now()
	ids, err := l.checkouts(t.Context(), 5, types)
	require.NoError(t, err)
	require.Len(t, ids, 5)
	require.Equal(t, 5, l.reserved)
	require.Equal(t, 3, flaky.failed)
	require.Equal(t, 3, l.retried, "each connection error is one retry")
	require.Equal(t, 5*2, flaky.read, "two reads by checkout that reserved")
	// The checkouts run 8 at once, so the three retries may wait side by
	// side: at least 20 ms passed (TestDemoLoad_Retry checks the growth).
	require.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "the retries did not wait")
	for _, id := range ids {
		o, err := l.store.Order(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, ledger.StateReserved, o.State)
	}
}

// An answer is not retried: a sold-out checkout is counted as sold out at
// once, however many connection errors came before.
func TestDemoLoad_SoldOutIsNotRetried(t *testing.T) {
	t.Parallel()
	l, flaky, types := newFlakyLoad(t, 0, 1)
	_, err := l.checkouts(t.Context(), 6, types)
	require.NoError(t, err)
	require.Positive(t, l.soldOut)
	require.Equal(t, 6, l.reserved+l.soldOut)
	require.Zero(t, l.retried)
	require.Equal(t, 6*2, flaky.read, "a checkout tried again")
}

// The retries are bounded: a Redis that never comes back ends the run
// with the connection error, after retryFor.
func TestDemoLoad_RetriesGiveUp(t *testing.T) {
	t.Parallel()
	l, _, types := newFlakyLoad(t, 1<<30, 1000)
	l.retryFor = 200 * time.Millisecond
	_, err := l.checkouts(t.Context(), 1, types)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "gave up after 200ms")
	require.Positive(t, l.retried)
}

// retry itself: a step that fails N times with a connection error runs N+1
// times; a final error ends it at once; a cancelled context ends it.
func TestDemoLoad_Retry(t *testing.T) {
	t.Parallel()
	l := &demoLoad{}
	never := func(error) bool { return false }
	calls := 0
	var at []time.Time
	err := l.retry(t.Context(), func() error {
		at = append(at, time.Now())
		if calls++; calls <= 4 {
			return refused()
		}
		return nil
	}, never)
	require.NoError(t, err)
	require.Equal(t, 5, calls)
	require.Equal(t, 4, l.retried)
	// The waits grow: 20, 40, 80, 160 ms.
	for i, want := range []time.Duration{20, 40, 80, 160} {
		require.GreaterOrEqual(t, at[i+1].Sub(at[i]), want*time.Millisecond, "wait %d", i+1)
	}

	calls = 0
	err = l.retry(t.Context(), func() error { calls++; return fmt.Errorf("reserve: %w", jobs.ErrSoldOut) }, checkoutFinal)
	require.ErrorIs(t, err, jobs.ErrSoldOut)
	require.Equal(t, 1, calls)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = l.retry(ctx, refused, never)
	require.True(t, errors.Is(err, context.Canceled) && errors.Is(err, syscall.ECONNREFUSED), "%v", err)
}
