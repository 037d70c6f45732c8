package jobs_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A revoke task lost apart from its order's commit (the queue's master
// failing over on Cluster) left the order's tickets reserved for good. The
// sweep finds the order in the ledger, due in the same commit that
// reserved it, and schedules its revoke again; a revoke that still exists,
// and an order that was paid, are left alone.
func TestSweepRevokes_ReschedulesALostRevoke(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	s.svc.PaymentWindow = 50 * time.Millisecond
	lost := s.reserve(t, "o-lost", gold(3))
	kept := s.reserve(t, "o-kept", gold(1))
	paid := s.reserve(t, "o-paid", gold(1))
	require.NoError(t, s.confirm(t, paid, "wh-1"))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+lost.ID), "losing the revoke")
	time.Sleep(60 * time.Millisecond)

	n, err := s.svc.SweepRevokes(t.Context(), 0)
	require.NoError(t, err)
	require.Equal(t, 1, n, "rescheduled: the lost revoke only")
	ti, err := s.inspect.GetTaskInfo("default", "revoke:"+lost.ID)
	require.NoError(t, err, "the lost revoke was not scheduled again")
	require.Equal(t, jobs.KindRevoke, ti.Type)
	// The order whose revoke exists is put back, not left at the head of
	// the next sweep's batch.
	due, err := s.svc.Store.DueRevokes(t.Context(), time.Now(), 10)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{lost.ID}, due, "an order whose revoke exists stayed due")

	// The rescheduled revoke runs like the first would have.
	for _, o := range []*ledger.Order{lost, kept} {
		require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
		require.Equal(t, ledger.StateRevoked, s.order(t, o.ID).State)
	}
	require.Equal(t, int64(9), s.goldLeft(t), "the paid order's ticket only")
	due, err = s.svc.Store.DueRevokes(t.Context(), time.Now(), 10)
	require.NoError(t, err)
	require.Empty(t, due, "a revoked order is no longer due")
	require.True(t, s.check(t).OK)

	// Within the grace, nothing is swept: the scheduled revoke is on its way.
	fresh := s.reserve(t, "o-fresh", gold(1))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+fresh.ID))
	n, err = s.svc.SweepRevokes(t.Context(), time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
}

// diesBeforeDelivery is a Store whose Deliver does nothing while dead is
// set: the worker was killed after its commit, before its delivery ran.
type diesBeforeDelivery struct {
	jobs.Store
	dead atomic.Bool
}

func (s *diesBeforeDelivery) Deliver(ctx context.Context, orderID string) (int, error) {
	if s.dead.Load() {
		return 0, nil
	}
	return s.Store.Deliver(ctx, orderID)
}

func serverShop(t *testing.T) *shop {
	t.Helper()
	return newShop(t, redistest.Server(t).Client(t))
}

// A worker killed, paused or cut off between a job's commit and its
// delivery left the notification pending until the next job on the order,
// for good if none came. The sweep delivers it, once: whatever races it
// (the job's own late delivery, another worker's sweep) and however often
// it runs.
func TestSweepOutbox(t *testing.T) {
	t.Parallel()
	for _, be := range []struct {
		name string
		shop func(t *testing.T) *shop
	}{{"Miniredis", miniShop}, {"Redis", serverShop}} {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			testSweepOutbox(t, be.shop)
		})
	}
}

func testSweepOutbox(t *testing.T, newShop func(t *testing.T) *shop) {
	t.Helper()
	// setup is a shop whose jobs' workers die before they deliver.
	setup := func(t *testing.T) (*shop, *diesBeforeDelivery) {
		t.Helper()
		s := newShop(t)
		store := &diesBeforeDelivery{Store: s.svc.Store}
		s.svc.Store = store
		return s, store
	}
	delivered := func(t *testing.T, s *shop) map[string]int64 {
		t.Helper()
		_, counts, err := s.store.Outbox(t.Context())
		require.NoError(t, err)
		return counts
	}

	t.Run("DeliversWhatADeadJobLeft", func(t *testing.T) {
		t.Parallel()
		s, store := setup(t)
		ctx := t.Context()
		o := s.reserve(t, "o-1", gold(1))
		store.dead.Store(true)
		require.NoError(t, s.confirm(t, o, "wh-1"), "the commit lands; the worker dies before it delivers")
		store.dead.Store(false)
		require.Empty(t, delivered(t, s), "delivered by a dead worker")
		left, err := s.store.Undelivered(ctx, time.Now(), 10)
		require.NoError(t, err)
		require.Equal(t, []string{o.ID}, left)

		n, err := s.svc.SweepOutbox(ctx, time.Hour)
		require.NoError(t, err)
		require.Zero(t, n, "within the grace: the job's own delivery may still come")
		n, err = s.svc.SweepOutbox(ctx, 0)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, map[string]int64{"o-1:confirmed": 1}, delivered(t, s))

		// Swept again, and the job's delivery comes late after all:
		// nothing more is sent.
		for range 3 {
			n, err = s.svc.SweepOutbox(ctx, 0)
			require.NoError(t, err)
			require.Zero(t, n, "a sweep sent a notification again")
		}
		n, err = s.store.Deliver(ctx, o.ID)
		require.NoError(t, err)
		require.Zero(t, n)

		// The next job on the order dies too: its notification alone goes.
		store.dead.Store(true)
		require.NoError(t, run(t, s, o.ID, s.svc.Refund, jobs.RefundArgs{OrderID: o.ID, RefundID: "r-1", Amount: 100, Currency: o.Currency}))
		store.dead.Store(false)
		n, err = s.svc.SweepOutbox(ctx, 0)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, map[string]int64{"o-1:confirmed": 1, "o-1:refunded:r-1": 1}, delivered(t, s))
		left, err = s.store.Undelivered(ctx, time.Now().Add(time.Hour), 10)
		require.NoError(t, err)
		require.Empty(t, left)
		require.True(t, s.check(t).OK)
	})

	t.Run("RacesLateDeliveriesOnce", func(t *testing.T) {
		t.Parallel()
		s, store := setup(t)
		ctx := t.Context()
		const orders = 20
		ids := make([]string, orders)
		store.dead.Store(true)
		for i := range ids {
			ids[i] = fmt.Sprintf("o-%d", i)
			require.NoError(t, s.confirm(t, s.reserve(t, ids[i], ledger.Item{TicketType: "floor", Quantity: 1}), "wh-"+ids[i]))
		}
		store.dead.Store(false)

		// Two workers sweep while each job's late delivery runs.
		var sent atomic.Int64
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range 3 {
					n, err := s.svc.SweepOutbox(ctx, 0)
					if err != nil {
						t.Error(err)
					}
					sent.Add(int64(n))
				}
			})
		}
		for _, id := range ids {
			wg.Go(func() {
				n, err := s.store.Deliver(ctx, id)
				if err != nil {
					t.Error(err)
				}
				sent.Add(int64(n))
			})
		}
		wg.Wait()
		require.Equal(t, int64(orders), sent.Load(), "each notification sent once in all")
		counts := delivered(t, s)
		require.Len(t, counts, orders)
		for id, n := range counts {
			require.Equal(t, int64(1), n, id)
		}
		left, err := s.store.Undelivered(ctx, time.Now().Add(time.Hour), orders)
		require.NoError(t, err)
		require.Empty(t, left)
	})
}

// Sweep runs both sweeps, and leaves a notification to the job that
// committed it for as long as that job's delivery may take, whatever the
// grace: a sweep every two seconds must not warn of orders that nothing
// went wrong with.
func TestSweep_LeavesAJobItsOwnDelivery(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	store := &diesBeforeDelivery{Store: s.svc.Store}
	s.svc.Store = store
	s.svc.PaymentWindow = 50 * time.Millisecond
	lost := s.reserve(t, "o-lost", gold(1))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+lost.ID), "losing the revoke")
	paid := s.reserve(t, "o-paid", gold(1))
	store.dead.Store(true)
	require.NoError(t, s.confirm(t, paid, "wh-1"))
	store.dead.Store(false)
	time.Sleep(60 * time.Millisecond) // the payment window

	require.NoError(t, s.svc.Sweep(t.Context(), 0))
	_, err := s.inspect.GetTaskInfo("default", "revoke:"+lost.ID)
	require.NoError(t, err, "the lost revoke was not scheduled again")
	undelivered, err := s.store.Undelivered(t.Context(), time.Now(), 10)
	require.NoError(t, err)
	require.Equal(t, []string{paid.ID}, undelivered, "a notification just committed was swept")
}

// SweepEvery sweeps until its context ends.
func TestSweepEvery(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	s.svc.PaymentWindow = time.Millisecond
	lost := s.reserve(t, "o-lost", gold(1))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+lost.ID), "losing the revoke")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.svc.SweepEvery(ctx, 10*time.Millisecond, 0)
	}()
	require.Eventually(t, func() bool {
		_, err := s.inspect.GetTaskInfo("default", "revoke:"+lost.ID)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "no sweep scheduled the lost revoke")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SweepEvery did not return when its context ended")
	}
}
