package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

func TestReserve(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	a := s.reserve(t, "o-1", gold(4), ledger.Item{TicketType: "floor", Quantity: 1})
	require.Equal(t, "TS-000001", a.Number)
	require.Equal(t, int64(4*2500+900), a.Amount)
	require.Equal(t, "EUR", a.Currency)
	require.Equal(t, int64(6), s.goldLeft(t))
	b := s.reserve(t, "o-2", gold(6))
	require.Equal(t, "TS-000002", b.Number)

	_, err := s.svc.Reserve(t.Context(), "o-3", []ledger.Item{gold(1)})
	require.ErrorIs(t, err, jobs.ErrSoldOut)
	_, err = s.svc.Store.Order(t.Context(), "o-3")
	require.ErrorIs(t, err, ledger.ErrNotFound, "a sold-out reservation left an order")
	require.Zero(t, s.goldLeft(t))

	revokes, err := s.inspect.ListScheduledTasks("default")
	require.NoError(t, err)
	require.Len(t, revokes, 2, "each reservation schedules its revoke")
	require.Equal(t, jobs.KindRevoke, revokes[0].Type)

	_, err = s.svc.Reserve(t.Context(), "o 4", []ledger.Item{gold(1)})
	require.ErrorContains(t, err, "order_id")
	_, err = s.svc.Reserve(t.Context(), "o-4", []ledger.Item{{TicketType: "gold", Quantity: 0}})
	require.ErrorContains(t, err, "items[0].quantity")
	require.True(t, s.check(t).OK)
}

// A reservation whose revoke cannot be scheduled (Redis failing over, a
// cut connection) reserves nothing: before, it committed the order first
// and left it reserved with no revoke, its tickets held for good. And a
// revoke whose reservation failed after scheduling it finds no order and
// does nothing.
func TestReserve_WithoutItsRevokeReservesNothing(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	down := miniredis.RunT(t)
	dead := redis.NewClient(&redis.Options{Addr: down.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = dead.Close() })
	down.Close()
	svc := *s.svc
	svc.Client = asynq.NewClientFromRedisClient(dead)
	_, reserveErr := svc.Reserve(t.Context(), "o-1", []ledger.Item{gold(3)})
	_, err := s.svc.Store.Order(t.Context(), "o-1")
	require.ErrorIs(t, err, ledger.ErrNotFound, "an order was reserved without its revoke")
	require.ErrorContains(t, reserveErr, "schedule its revoke")
	require.Equal(t, int64(10), s.goldLeft(t))
	require.True(t, s.check(t).OK)

	require.NoError(t, run(t, s, "o-never", s.svc.Revoke, jobs.RevokeArgs{OrderID: "o-never"}))
}

// A checkout retried after an error it could not read (a reply lost to a
// failover, a cut connection) reserves once: before, the retry failed on
// its own revoke's task ID, or, with the revoke gone, reserved the tickets
// a second time under the same order.
func TestReserve_RetriedReservesOnce(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	first := s.reserve(t, "o-1", gold(3))
	again, err := s.svc.Reserve(t.Context(), "o-1", []ledger.Item{gold(3)})
	require.NoError(t, err, "a retried reservation")
	require.Equal(t, first.Number, again.Number)
	require.Equal(t, int64(7), s.goldLeft(t), "the retry reserved the tickets again")

	_, err = s.svc.Reserve(t.Context(), "o-1", []ledger.Item{gold(2)})
	require.ErrorIs(t, err, jobs.ErrOrderExists, "another reservation under a taken ID")
	require.Equal(t, int64(3), s.order(t, "o-1").Quantity("gold"))
	require.Equal(t, int64(7), s.goldLeft(t))

	// The revoke went with the first try; a retry whose revoke is gone
	// still reserves nothing twice.
	n, err := s.inspect.DeleteAllScheduledTasks("default")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.svc.Reserve(t.Context(), "o-1", []ledger.Item{gold(3)})
	require.NoError(t, err)
	require.Equal(t, int64(7), s.goldLeft(t))

	// A first try that scheduled its revoke and failed before its commit.
	revoke, err := jobs.NewTask(t.Context(), jobs.RevokeArgs{OrderID: "o-2"}, asynq.ProcessIn(time.Hour))
	require.NoError(t, err)
	_, err = s.svc.Client.EnqueueContext(t.Context(), revoke)
	require.NoError(t, err)
	_, err = s.svc.Reserve(t.Context(), "o-2", []ledger.Item{gold(1)})
	require.NoError(t, err, "the retry after a failed commit")
	require.Equal(t, int64(6), s.goldLeft(t))
	require.True(t, s.check(t).OK)
}

func TestConfirm(t *testing.T) {
	t.Parallel()

	t.Run("ReservedBecomesPaidOnce", func(t *testing.T) {
		t.Parallel()
		s := miniShop(t)
		o := s.reserve(t, "o-1", gold(2))
		require.NoError(t, s.confirm(t, o, "wh-1"))
		require.NoError(t, s.confirm(t, o, "wh-2"), "a duplicate webhook succeeds")
		got := s.order(t, o.ID)
		require.Equal(t, ledger.StatePaid, got.State)
		require.Equal(t, o.Amount, got.Paid)
		captured, _ := s.money(t, o.ID)
		require.Equal(t, o.Amount, captured, "captured once")
		require.Equal(t, int64(8), s.goldLeft(t), "paying keeps the tickets out of inventory")
		r := s.check(t)
		require.True(t, r.OK, "%+v", r.Violations)
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		s := miniShop(t)
		o := s.reserve(t, "o-1", gold(2))
		err := run(t, s, o.ID, s.svc.Confirm, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: "w", Amount: o.Amount + 1, Currency: "EUR"})
		require.ErrorIs(t, err, asynq.SkipRetry, "a wrong amount cannot succeed later")
		err = run(t, s, "nope", s.svc.Confirm, jobs.ConfirmArgs{OrderID: "nope", WebhookID: "w", Amount: 1, Currency: "EUR"})
		require.ErrorIs(t, err, asynq.SkipRetry)
		require.ErrorContains(t, err, "does not exist")
		captured, _ := s.money(t, o.ID)
		require.Zero(t, captured)
	})

	t.Run("LatePaymentReReserves", func(t *testing.T) {
		t.Parallel()
		s := miniShop(t)
		o := s.reserve(t, "o-1", gold(3))
		require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
		require.Equal(t, int64(10), s.goldLeft(t))
		require.NoError(t, s.confirm(t, o, "wh-late"))
		require.Equal(t, ledger.StatePaid, s.order(t, o.ID).State)
		require.Equal(t, int64(7), s.goldLeft(t))
		r := s.check(t)
		require.True(t, r.OK, "%+v", r.Violations)
	})

	t.Run("LatePaymentForSoldOutIsRefunded", func(t *testing.T) {
		t.Parallel()
		s := miniShop(t)
		o := s.reserve(t, "o-1", gold(3))
		require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
		s.reserve(t, "o-2", gold(10))
		require.NoError(t, s.confirm(t, o, "wh-late"))
		got := s.order(t, o.ID)
		require.Equal(t, ledger.StateRevoked, got.State)
		require.Equal(t, o.Amount, got.Paid, "the money arrived")
		refund, err := s.inspect.GetTaskInfo("default", "refund:late-"+o.ID)
		require.NoError(t, err, "a refund was enqueued")
		args, err := jobs.Decode[jobs.RefundArgs](refund.Payload)
		require.NoError(t, err)
		require.Equal(t, o.Amount, args.Amount)
		require.NoError(t, run(t, s, o.ID, s.svc.Refund, args))
		captured, refunded := s.money(t, o.ID)
		require.Equal(t, captured, refunded)
		r := s.check(t)
		require.True(t, r.OK, "%+v", r.Violations)
	})
}

func TestRefund(t *testing.T) {
	t.Parallel()
	paid := func(t *testing.T) (*shop, *ledger.Order) {
		t.Helper()
		s := miniShop(t)
		o := s.reserve(t, "o-1", gold(2)) // 5000
		require.NoError(t, s.confirm(t, o, "wh"))
		return s, o
	}
	refund := func(t *testing.T, s *shop, id string, amount int64) error {
		t.Helper()
		return run(t, s, "o-1", s.svc.Refund, jobs.RefundArgs{OrderID: "o-1", RefundID: id, Amount: amount, Currency: "EUR"})
	}

	t.Run("PartialThenFull", func(t *testing.T) {
		t.Parallel()
		s, o := paid(t)
		require.NoError(t, refund(t, s, "r-1", 1000))
		require.Equal(t, ledger.StatePartiallyRefunded, s.order(t, o.ID).State)
		require.Equal(t, int64(8), s.goldLeft(t), "a partial refund keeps the tickets")
		require.NoError(t, refund(t, s, "r-1", 1000), "a retried refund is a no-op")
		require.NoError(t, refund(t, s, "r-2", 4000))
		got := s.order(t, o.ID)
		require.Equal(t, ledger.StateRefunded, got.State)
		require.Equal(t, int64(5000), got.Refunded)
		require.Equal(t, int64(10), s.goldLeft(t), "a full refund returns the tickets")
		_, refunded := s.money(t, o.ID)
		require.Equal(t, int64(5000), refunded)
		r := s.check(t)
		require.True(t, r.OK, "%+v", r.Violations)
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		s, _ := paid(t)
		err := refund(t, s, "r-big", 5001)
		require.ErrorIs(t, err, asynq.SkipRetry)
		require.ErrorContains(t, err, "exceeds")
		s.reserve(t, "o-2", gold(1))
		err = run(t, s, "o-2", s.svc.Refund, jobs.RefundArgs{OrderID: "o-2", RefundID: "r", Amount: 1, Currency: "EUR"})
		require.ErrorIs(t, err, asynq.SkipRetry)
		require.ErrorContains(t, err, "only a paid order")
		_, refunded := s.money(t, "o-1")
		require.Zero(t, refunded)
	})
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	o := s.reserve(t, "o-1", gold(2))
	require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
	require.Equal(t, ledger.StateRevoked, s.order(t, o.ID).State)
	require.Equal(t, int64(10), s.goldLeft(t))
	require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}), "revoking twice is a no-op")
	require.Equal(t, int64(10), s.goldLeft(t), "tickets returned once")

	p := s.reserve(t, "o-2", gold(2))
	require.NoError(t, s.confirm(t, p, "wh"))
	require.NoError(t, run(t, s, p.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: p.ID}), "revoking a paid order succeeds")
	require.Equal(t, ledger.StatePaid, s.order(t, p.ID).State, "and changes nothing")
	r := s.check(t)
	require.True(t, r.OK, "%+v", r.Violations)
}

// The checker must be able to fail: a ledger written around the jobs is
// caught.
func TestCheck_FindsViolations(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	o := s.reserve(t, "o-1", gold(2))
	require.NoError(t, s.confirm(t, o, "wh"))
	// A second writer that read "10 available" before the reservation.
	require.NoError(t, s.svc.Store.Commit(t.Context(), nil, ledger.Change{Available: map[string]int64{"gold": 9}}))
	// The ledger says more was refunded than the gateway refunded.
	ahead := s.order(t, "o-1")
	ahead.Refunded = 100
	require.NoError(t, s.svc.Store.Commit(t.Context(), nil, ledger.Change{Order: ahead}))
	// Money moved that the ledger lost track of: a lost webhook, and a
	// capture for an order the ledger lost altogether.
	behind := s.reserve(t, "o-2", gold(1))
	_, err := s.gw.Capture(t.Context(), "capture:o-2", "o-2", behind.Amount, "EUR")
	require.NoError(t, err)
	_, err = s.gw.Capture(t.Context(), "stray", "o-stray", 100, "EUR")
	require.NoError(t, err)
	r := s.check(t)
	require.False(t, r.OK)
	rules := map[string]bool{}
	for _, v := range r.Violations {
		rules[v.Rule] = true
	}
	require.True(t, rules[jobs.RuleInventory], "%+v", r.Violations)
	require.True(t, rules[jobs.RuleMoney], "%+v", r.Violations)
	require.Len(t, r.Violations, 2, "%+v", r.Violations)
	var unreconciled []string
	for _, v := range r.Unreconciled {
		unreconciled = append(unreconciled, v.Subject)
	}
	require.ElementsMatch(t, []string{"order o-2", "order o-stray"}, unreconciled, "%+v", r.Unreconciled)
}

// lostDelivery is a Store whose Deliver fails while lose is set: a worker
// killed after its commit, before its locks were released.
type lostDelivery struct {
	jobs.Store
	lose bool
}

func (s *lostDelivery) Deliver(ctx context.Context, orderID string) (int, error) {
	if s.lose {
		return 0, errors.New("killed before delivery")
	}
	return s.Store.Deliver(ctx, orderID)
}

// A job killed between its commit and its delivery is retried; the retry
// finds its change applied and returns early, and must deliver then, or
// the customer never hears of it.
func TestJobs_ARetryDeliversWhatItsKilledTryCommitted(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	store := &lostDelivery{Store: s.svc.Store}
	s.svc.Store = store
	delivered := func(id string) int64 {
		_, counts, err := s.store.Outbox(t.Context())
		require.NoError(t, err)
		return counts[id]
	}
	for _, tc := range []struct {
		name, note string
		job        func(o *ledger.Order) error
	}{
		{"Confirm", ":confirmed", func(o *ledger.Order) error { return s.confirm(t, o, "wh-1") }},
		{"Refund", ":refunded:r-1", func(o *ledger.Order) error {
			return run(t, s, o.ID, s.svc.Refund, jobs.RefundArgs{OrderID: o.ID, RefundID: "r-1", Amount: 100, Currency: o.Currency})
		}},
		{"Revoke", ":revoked", func(o *ledger.Order) error {
			return run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID})
		}},
	} {
		o := s.reserve(t, "o-"+tc.name, gold(1))
		if tc.name == "Refund" {
			require.NoError(t, s.confirm(t, o, "wh-0"))
		}
		store.lose = true
		require.NoError(t, tc.job(o), "the commit lands; the delivery is lost")
		require.Zero(t, delivered(o.ID+tc.note), tc.name)
		store.lose = false
		require.NoError(t, tc.job(o), "the retry")
		require.Equal(t, int64(1), delivered(o.ID+tc.note), "%s: the retry must deliver", tc.name)
	}
}
