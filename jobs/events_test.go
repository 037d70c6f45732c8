package jobs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/keyslot"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

// addEvents adds two ticket types to each event: "<event>-pit" and
// "<event>-seat".
func addEvents(t *testing.T, store *ledger.Store, events ...string) {
	t.Helper()
	for _, e := range events {
		for _, tt := range []ledger.TicketType{
			{ID: e + "-pit", Event: e, Name: "Pit", Capacity: 10, Price: 4000, Currency: "EUR"},
			{ID: e + "-seat", Event: e, Name: "Seat", Capacity: 20, Price: 2000, Currency: "EUR"},
		} {
			require.NoError(t, store.AddTicketType(t.Context(), tt))
		}
	}
}

func item(ticketType string, n int64) ledger.Item {
	return ledger.Item{TicketType: ticketType, Quantity: n}
}

// An order is of one event, so that it commits in one Cluster slot: one
// that mixes events is refused before it takes a lock, and reserves
// nothing.
func TestReserve_OneEventPerOrder(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	addEvents(t, s.store, "rock", "jazz")
	ctx := t.Context()
	left := func(tt string) int64 {
		t.Helper()
		_, n, err := s.store.TicketType(ctx, tt)
		require.NoError(t, err)
		return n
	}
	for _, items := range [][]ledger.Item{
		{item("rock-pit", 1), item("jazz-pit", 1)},
		{item("rock-seat", 2), item("rock-pit", 1), item("gold", 1)}, // the default event is an event too
	} {
		_, err := s.svc.Reserve(ctx, "o-mixed", items)
		require.ErrorIs(t, err, jobs.ErrMixedEvents)
		require.ErrorContains(t, err, `of event "rock"`)
	}
	_, err := s.store.Order(ctx, "o-mixed")
	require.ErrorIs(t, err, ledger.ErrNotFound, "a mixed order was reserved")
	require.Equal(t, int64(10), left("rock-pit"))
	require.Equal(t, int64(10), left("jazz-pit"))
	require.Equal(t, int64(10), s.goldLeft(t))
	_, err = s.inspect.GetQueueInfo("default")
	require.ErrorContains(t, err, "does not exist", "a mixed order scheduled a revoke")

	o := s.reserve(t, "o-1", item("rock-pit", 2), item("rock-seat", 1))
	require.Equal(t, "rock", o.Event)
	require.Equal(t, "TS-rock-000001", o.Number)
	require.Equal(t, "TS-jazz-000001", s.reserve(t, "o-2", item("jazz-seat", 1)).Number)
	require.Equal(t, "TS-000001", s.reserve(t, "o-3", gold(1)).Number)
	require.True(t, s.check(t).OK)
}

// Jobs carry an order ID only; a worker that never saw the order finds its
// event through the ledger's index, and the whole life of the order runs
// in that event.
func TestJobs_FindTheOrdersEventByID(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	addEvents(t, s.store, "rock")
	o := s.reserve(t, "o-1", item("rock-pit", 2))

	other := *s // another worker: its own Store, nothing cached
	svc := *s.svc
	svc.Store = ledger.New(s.books, "")
	other.svc = &svc
	require.NoError(t, other.confirm(t, o, "wh"))
	require.NoError(t, run(t, &other, o.ID, svc.Refund, jobs.RefundArgs{OrderID: o.ID, RefundID: "r", Amount: o.Amount, Currency: "EUR"}))
	got := s.order(t, o.ID)
	require.Equal(t, ledger.StateRefunded, got.State)
	_, n, err := s.store.TicketType(t.Context(), "rock-pit")
	require.NoError(t, err)
	require.Equal(t, int64(10), n, "the refund returned the tickets to the event's inventory")
	r := s.check(t)
	require.True(t, r.OK, "%+v", r.Violations)
	require.Equal(t, 1, r.Orders)
}

// Issue 14: on a real 3-master Cluster, orders of different events live on
// different masters, every script stays in one slot (CROSSSLOT otherwise),
// and the invariants hold.
func TestShop_OnRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.Cluster(t, 3, 0)
	rdb := cluster.Client(t)
	books := cluster.Client(t)
	redistest.CheckSlots(t, books)
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	gw, err := gateway.NewSimulator(books, gateway.Config{})
	require.NoError(t, err)
	store := ledger.New(books, "")
	s := &shop{
		svc:   &jobs.Service{Store: store, Gateway: gw, Locker: locker, Client: asynq.NewClientFromRedisClient(rdb)},
		store: store, rdb: rdb, books: books, gw: gw, locker: locker, inspect: asynq.NewInspectorFromRedisClient(rdb),
	}

	// One event on each master.
	masters := map[string]string{} // master -> event
	for i := 0; len(masters) < 3; i++ {
		e := fmt.Sprintf("event%d", i)
		if m := cluster.MasterOf("{ledger:" + e + "}").Addr(); masters[m] == "" {
			masters[m] = e
		}
	}
	var events []string
	for _, e := range masters {
		events = append(events, e)
	}
	addEvents(t, store, events...)
	ctx := t.Context()
	for i := range 24 {
		e := events[i%len(events)]
		o, err := s.svc.Reserve(ctx, fmt.Sprintf("o-%d", i), []ledger.Item{item(e+"-pit", 1+int64(i%2)), item(e+"-seat", 1)})
		require.NoError(t, err)
		switch i % 4 {
		case 0:
			require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
		case 1, 2:
			require.NoError(t, s.confirm(t, o, "wh"))
		}
		if i%4 == 2 {
			require.NoError(t, run(t, s, o.ID, s.svc.Refund, jobs.RefundArgs{OrderID: o.ID, RefundID: "r-" + o.ID, Amount: o.Amount, Currency: "EUR"}))
		}
	}
	// Each event's orders are on its master, and only there.
	for m, e := range masters {
		for i := range 24 {
			if events[i%len(events)] != e {
				continue
			}
			key := fmt.Sprintf("%s{ledger:%s}:order:o-%d", ledger.DefaultPrefix, e, i)
			require.Equal(t, m, cluster.MasterOf(key).Addr())
			n, err := cluster.MasterOf(key).Client(t).Exists(ctx, key).Result()
			require.NoError(t, err)
			require.Equal(t, int64(1), n, "order o-%d is not on %s", i, m)
		}
	}
	require.NotEqual(t, keyslot.Of("{ledger:"+events[0]+"}"), keyslot.Of("{ledger:"+events[1]+"}"))
	r, err := jobs.Check(context.WithoutCancel(ctx), store, gw)
	require.NoError(t, err)
	require.True(t, r.OK, "%+v", r.Violations)
	require.Equal(t, 24, r.Orders)
	require.Equal(t, 6, r.TicketTypes)
}
