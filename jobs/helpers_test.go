package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shop is a Service on its own Redis, with two ticket types.
type shop struct {
	svc   *jobs.Service
	store *ledger.Store
	rdb   redis.UniversalClient // the locks' and asynq's client
	// books is the ledger's and the gateway's client, on the same Redis,
	// with redistest.CheckSlots: each of their script calls must stay in
	// one Cluster slot.
	books   redis.UniversalClient
	gw      *gateway.Simulator
	locker  *lock.Locker
	inspect *asynq.Inspector
}

func newShop(t *testing.T, rdb *redis.Client) *shop {
	t.Helper()
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	books := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
	t.Cleanup(func() { require.NoError(t, books.Close()) })
	redistest.CheckSlots(t, books)
	gw, err := gateway.NewSimulator(books, gateway.Config{})
	require.NoError(t, err)
	store := ledger.New(books, "")
	for _, tt := range []ledger.TicketType{
		{ID: "gold", Name: "Gold", Capacity: 10, Price: 2500, Currency: "EUR"},
		{ID: "floor", Name: "Floor", Capacity: 100, Price: 900, Currency: "EUR"},
	} {
		require.NoError(t, store.AddTicketType(t.Context(), tt))
	}
	return &shop{
		svc:     &jobs.Service{Store: store, Gateway: gw, Locker: locker, Client: asynq.NewClientFromRedisClient(rdb)},
		store:   store,
		rdb:     rdb,
		books:   books,
		gw:      gw,
		locker:  locker,
		inspect: asynq.NewInspectorFromRedisClient(rdb),
	}
}

func miniShop(t *testing.T) *shop {
	t.Helper()
	_, rdb := redistest.MiniClient(t)
	return newShop(t, rdb)
}

// run runs a job under the order's lock, as the worker's guard would.
func run[A any](t *testing.T, s *shop, orderID string, job func(context.Context, A) error, args A) error {
	t.Helper()
	lease, err := s.locker.Acquire(t.Context(), lock.Key("order", orderID))
	require.NoError(t, err)
	defer func() { require.NoError(t, lease.Release(context.Background())) }()
	return job(middleware.WithLease(t.Context(), lease), args)
}

func (s *shop) reserve(t *testing.T, id string, items ...ledger.Item) *ledger.Order {
	t.Helper()
	o, err := s.svc.Reserve(t.Context(), id, items)
	require.NoError(t, err)
	return o
}

func (s *shop) order(t *testing.T, id string) *ledger.Order {
	t.Helper()
	o, err := s.svc.Store.Order(t.Context(), id)
	require.NoError(t, err)
	return o
}

func (s *shop) goldLeft(t *testing.T) int64 {
	t.Helper()
	_, n, err := s.svc.Store.TicketType(t.Context(), "gold")
	require.NoError(t, err)
	return n
}

func (s *shop) money(t *testing.T, orderID string) (captured, refunded int64) {
	t.Helper()
	c, r, err := s.gw.Ledger(t.Context(), orderID)
	require.NoError(t, err)
	return c, r
}

func (s *shop) confirm(t *testing.T, o *ledger.Order, webhook string) error {
	t.Helper()
	return run(t, s, o.ID, s.svc.Confirm, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: webhook, Amount: o.Amount, Currency: o.Currency})
}

func (s *shop) check(t *testing.T) jobs.Report {
	t.Helper()
	r, err := jobs.Check(t.Context(), s.store, s.gw)
	require.NoError(t, err)
	return r
}

func gold(n int64) ledger.Item { return ledger.Item{TicketType: "gold", Quantity: n} }
