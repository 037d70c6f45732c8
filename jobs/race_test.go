package jobs_test

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/worker"
)

// racingShop is a shop on a real redis-server whose gateway takes a few
// milliseconds, like a real one, which widens every race.
func racingShop(t *testing.T, noLock bool) *shop {
	t.Helper()
	s := newShop(t, redistest.Server(t).Client(t))
	gw, err := gateway.NewSimulator(s.books, gateway.Config{Latency: 10 * time.Millisecond, Seed: 7})
	require.NoError(t, err)
	s.gw, s.svc.Gateway, s.svc.NoLock = gw, gw, noLock
	s.svc.PaymentWindow = time.Hour // revokes run when the test says
	return s
}

// work runs a worker at concurrency 16 serving the shop's jobs until no
// task is left to run.
func (s *shop) work(t *testing.T) {
	t.Helper()
	cfg := worker.DefaultConfig()
	cfg.Concurrency = 16
	cfg.PollInterval = 10 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	w, err := worker.New(worker.Params{Config: cfg, Redis: s.rdb, TaskTypes: s.svc.TaskTypes(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	defer func() { require.NoError(t, w.Shutdown(t.Context())) }()
	require.Eventually(t, func() bool {
		for q := range cfg.Queues {
			info, err := s.inspect.GetQueueInfo(q)
			if err == nil && info.Pending+info.Active+info.Retry > 0 {
				return false
			}
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "tasks left in the queues")
}

func (s *shop) enqueue(t *testing.T, a jobs.Args, opts ...asynq.Option) {
	t.Helper()
	var task *asynq.Task
	var err error
	switch a := a.(type) {
	case jobs.ConfirmArgs:
		task, err = jobs.NewTask(t.Context(), a, opts...)
	case jobs.RefundArgs:
		task, err = jobs.NewTask(t.Context(), a, opts...)
	case jobs.RevokeArgs:
		task, err = jobs.NewTask(t.Context(), a, opts...)
	}
	require.NoError(t, err)
	_, err = s.svc.Client.EnqueueContext(t.Context(), task)
	require.NoError(t, err)
}

// paymentsRaceRevokes reserves orders, then enqueues for each a payment
// webhook (for every other order a duplicate too) and a revoke.
func paymentsRaceRevokes(t *testing.T, s *shop) {
	t.Helper()
	for i := range 40 {
		o := s.reserve(t, fmt.Sprintf("o-%d", i), ledger.Item{TicketType: "floor", Quantity: 2})
		webhooks := []string{"a", "b"}[:1+i%2]
		for _, wh := range webhooks {
			s.enqueue(t, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: o.ID + "-" + wh, Amount: o.Amount, Currency: o.Currency})
		}
		// The payment window closes as the payment arrives: the revoke goes
		// right behind it in its queue, so the two run side by side.
		s.enqueue(t, jobs.RevokeArgs{OrderID: o.ID}, asynq.Queue("critical"), asynq.TaskID("race-revoke:"+o.ID))
	}
	s.work(t)
}

// lastTickets has 50 checkouts race for the last 10 gold tickets, then
// pays for every order that got some.
func lastTickets(t *testing.T, s *shop) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var reserved []*ledger.Order
	for i := range 50 {
		wg.Go(func() {
			o, err := s.svc.Reserve(t.Context(), fmt.Sprintf("g-%d", i), []ledger.Item{gold(1)})
			if err != nil {
				require.ErrorIs(t, err, jobs.ErrSoldOut)
				return
			}
			mu.Lock()
			reserved = append(reserved, o)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, o := range reserved {
		s.enqueue(t, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: "wh-" + o.ID, Amount: o.Amount, Currency: o.Currency})
	}
	s.work(t)
}

func TestRaces_LocksKeepTheInvariants(t *testing.T) {
	t.Parallel()
	for name, race := range map[string]func(*testing.T, *shop){"PaymentsRaceRevokes": paymentsRaceRevokes, "LastTickets": lastTickets} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("Locked", func(t *testing.T) {
				t.Parallel()
				s := racingShop(t, false)
				race(t, s)
				r := s.check(t)
				require.True(t, r.OK, "%+v", r.Violations)
			})
			t.Run("Unlocked", func(t *testing.T) {
				t.Parallel()
				s := racingShop(t, true)
				race(t, s)
				r := s.check(t)
				require.False(t, r.OK, "without locks the same workload must break an invariant, and the checker must see it")
				t.Logf("without locks: %d violations, e.g. %+v", len(r.Violations), r.Violations[0])
			})
		})
	}
}
