package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/middleware"
)

// demoTicketTypes are of two events, so that on Redis Cluster the ledger
// spreads over two slots, as a shop's does: {ledger:arena} and
// {ledger:jazz} fall on different masters of an evenly split 3-master
// cluster (slots 7474 and 4391). Each event's largest type comes last. They are scarce: an event's orders (half of them) ask for
// about twice what there is of its largest type, and more of the others.
func demoTicketTypes(orders int) []ledger.TicketType {
	return []ledger.TicketType{
		{ID: "gold", Event: "arena", Name: "Gold circle", Capacity: int64(max(3, orders/30)), Price: 12_000, Currency: "EUR"},
		{ID: "stand", Event: "arena", Name: "Stand", Capacity: int64(max(5, orders/10)), Price: 6_500, Currency: "EUR"},
		{ID: "floor", Event: "arena", Name: "Floor", Capacity: int64(max(10, orders/4)), Price: 3_900, Currency: "EUR"},
		{ID: "bar", Event: "jazz", Name: "Bar", Capacity: int64(max(5, orders/8)), Price: 5_500, Currency: "EUR"},
		{ID: "dancefloor", Event: "jazz", Name: "Dance floor", Capacity: int64(max(10, 3*orders/10)), Price: 2_900, Currency: "EUR"},
	}
}

// demoLoad generates the workload: checkouts racing for scarce tickets,
// then payments racing revokes with duplicate webhooks, then refunds racing
// refunds and payments that arrive after their order was revoked.
type demoLoad struct {
	svc     *jobs.Service
	store   *ledger.Store
	inspect *asynq.Inspector
	rand    *rand.Rand
	stats   *demoStats
	// runID starts every order and ticket type ID of this run (and so every
	// task ID and lock key), so that runs sharing a Redis never meet and
	// a run's leftovers can be found and removed; empty: no prefix.
	runID string
	// retryFor overrides defaultRetryFor, for tests.
	retryFor time.Duration
	// cleanupOnce removes the run's keys and tasks once (demo_cleanup.go);
	// cleaned says what became of them.
	cleanupOnce sync.Once
	cleaned     cleanupSummary

	mu                sync.Mutex
	reserved, soldOut int
	enqueued, refused int
	retried           int // steps tried again after a Redis error
	// lost are the reserved orders a Redis crash took back: its last
	// acknowledged writes, lost with the file it had not yet synced.
	lost map[string]bool
}

// vanished notes that a reserved order is gone from the ledger.
func (l *demoLoad) vanished(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = map[string]bool{}
	}
	l.lost[id] = true
}

// defaultRetryFor is how long a step of the load is retried after a Redis
// error before the demo gives up: a Sentinel or Cluster failover takes
// 1-5 s here, and a production one up to tens of seconds.
const defaultRetryFor = 30 * time.Second

// retry runs step until it returns nil or an error final says retrying
// cannot change, the context ends, or retryFor has passed since its first
// failure, waiting 20 ms, then twice as long each time up to 500 ms, as a
// client riding out a failover would. What final does not name is taken
// for Redis going away (a refused or reset connection, READONLY, LOADING,
// a lock still held by a task that ran into the same fault), never for an
// answer: a sold-out checkout is not tried again. Every step the load
// retries is safe to repeat: a checkout retried under its order ID
// reserves once, an enqueue under its task ID enqueues once.
func (l *demoLoad) retry(ctx context.Context, step func() error, final func(error) bool) error {
	retryFor := cmp.Or(l.retryFor, defaultRetryFor)
	var deadline time.Time
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		err := step()
		if err == nil || final(err) {
			return err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(retryFor)
		} else if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %w", retryFor, err)
		}
		l.mu.Lock()
		l.retried++
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return errors.Join(err, context.Cause(ctx))
		case <-time.After(wait):
		}
	}
}

// order reads an order, riding out Redis errors.
func (l *demoLoad) order(ctx context.Context, id string) (o *ledger.Order, err error) {
	err = l.retry(ctx, func() (err error) {
		o, err = l.svc.Store.Order(ctx, id)
		return err
	}, func(err error) bool { return errors.Is(err, ledger.ErrNotFound) })
	return o, err
}

// id is name in this run's namespace.
func (l *demoLoad) id(name string) string {
	if l.runID == "" {
		return name
	}
	return l.runID + "-" + name
}

// ticketTypes are demoTicketTypes in this run's namespace.
func (l *demoLoad) ticketTypes(orders int) []ledger.TicketType {
	types := demoTicketTypes(orders)
	for i := range types {
		types[i].ID = l.id(types[i].ID)
	}
	return types
}

func (l *demoLoad) run(ctx context.Context, orders int, p *progress) error {
	types := l.ticketTypes(orders)
	for _, tt := range types {
		// Adding a ticket type again changes nothing: safe to retry.
		if err := l.retry(ctx, func() error { return l.store.AddTicketType(ctx, tt) }, func(error) bool { return false }); err != nil {
			return err
		}
	}
	p.phase("checkout")
	ids, err := l.checkouts(ctx, orders, types)
	if err != nil {
		return err
	}
	p.phase("payments and revokes")
	for _, id := range ids {
		o, err := l.order(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			l.vanished(id)
			continue
		}
		if err != nil {
			return err
		}
		switch r := l.rand.Float64(); {
		case r < 0.15: // the payment window closes as the payment arrives
			l.revokeNow(ctx, id)
			l.pay(ctx, o, "a")
		case r < 0.25: // never paid
			l.revokeNow(ctx, id)
		default:
			l.pay(ctx, o, "a")
			if l.rand.Float64() < 0.3 { // the gateway sends its webhook twice
				l.pay(ctx, o, "b")
			}
		}
	}
	if err := l.idle(ctx, p); err != nil {
		return err
	}
	p.phase("refunds and late payments")
	for _, id := range ids {
		o, err := l.order(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			l.vanished(id)
			continue
		}
		if err != nil {
			return err
		}
		switch {
		case o.State == ledger.StatePaid && l.rand.Float64() < 0.35:
			// Two refund requests race; together they may ask for too much.
			l.refund(ctx, o, "r1", o.Amount/2)
			second := o.Amount / 2
			if l.rand.Float64() < 0.4 {
				second = o.Amount
			}
			l.refund(ctx, o, "r2", second)
		case o.State == ledger.StateRevoked && o.Paid == 0 && l.rand.Float64() < 0.3:
			l.pay(ctx, o, "late")
		}
	}
	return l.idle(ctx, p)
}

// checkouts reserves orders from 8 goroutines at once.
func (l *demoLoad) checkouts(ctx context.Context, n int, types []ledger.TicketType) ([]string, error) {
	type order struct {
		id    string
		items []ledger.Item
	}
	work := make(chan order)
	go func() {
		defer close(work)
		var events []string
		for _, tt := range types {
			if !slices.Contains(events, tt.Event) {
				events = append(events, tt.Event)
			}
		}
		for i := range n {
			// An order is of one event (jobs.ErrMixedEvents).
			event, largest := events[l.rand.IntN(len(events))], ""
			var items []ledger.Item
			for _, tt := range types {
				if tt.Event != event {
					continue
				}
				largest = tt.ID
				if l.rand.Float64() < 0.45 {
					items = append(items, ledger.Item{TicketType: tt.ID, Quantity: 1 + l.rand.Int64N(3)})
				}
			}
			if len(items) == 0 {
				items = []ledger.Item{{TicketType: largest, Quantity: 1}}
			}
			select {
			case work <- order{l.id(fmt.Sprintf("o-%04d", i)), items}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		wg   sync.WaitGroup
		ids  []string
		errs []error
	)
	for range 8 {
		wg.Go(func() {
			for o := range work {
				err := l.retry(ctx, func() error {
					_, err := l.svc.Reserve(ctx, o.id, o.items)
					return err
				}, checkoutFinal)
				l.stats.progressed()
				l.mu.Lock()
				switch {
				case err == nil:
					l.reserved++
					ids = append(ids, o.id)
				case errors.Is(err, jobs.ErrSoldOut):
					l.soldOut++
				default:
					errs = append(errs, err)
				}
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// checkoutFinal tells a checkout's answer from a Redis error.
func checkoutFinal(err error) bool {
	var bad *middleware.PayloadError
	return errors.Is(err, jobs.ErrSoldOut) || errors.Is(err, jobs.ErrOrderExists) ||
		errors.Is(err, jobs.ErrMixedEvents) || errors.As(err, &bad)
}

// enqueueFinal tells the API's refusal from a Redis error.
func enqueueFinal(err error) bool {
	return errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask)
}

func (l *demoLoad) enqueue(ctx context.Context, task *asynq.Task, err error) {
	if err == nil {
		err = l.retry(ctx, func() error {
			_, err := l.svc.Client.EnqueueContext(ctx, task)
			return err
		}, enqueueFinal)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.refused++ // a duplicate task ID, or a payload the API refuses
		return
	}
	l.enqueued++
}

func (l *demoLoad) pay(ctx context.Context, o *ledger.Order, webhook string) {
	task, err := jobs.NewTask(ctx, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: o.ID + "-" + webhook, Amount: o.Amount, Currency: o.Currency})
	l.enqueue(ctx, task, err)
}

func (l *demoLoad) refund(ctx context.Context, o *ledger.Order, req string, amount int64) {
	task, err := jobs.NewTask(ctx, jobs.RefundArgs{OrderID: o.ID, RefundID: o.ID + "-" + req, Amount: amount, Currency: o.Currency})
	l.enqueue(ctx, task, err)
}

// revokeNow runs the revoke the checkout scheduled for the end of the
// payment window.
func (l *demoLoad) revokeNow(ctx context.Context, orderID string) {
	err := l.retry(ctx, func() error {
		return l.inspect.RunTask("default", "revoke:"+orderID)
	}, func(err error) bool {
		return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.refused++
		return
	}
	l.enqueued++
}

// demoQueues are the queues the demo's worker serves.
var demoQueues = []string{"critical", "default", "low"}

// idle waits until no task is pending, running or due for a retry.
func (l *demoLoad) idle(ctx context.Context, p *progress) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// A queue nothing was enqueued to yet is not listed; an error
		// (Redis failing over) is not known to be idle.
		queues, err := l.inspect.Queues()
		busy := 0
		if err != nil {
			busy++
		}
		for _, q := range queues {
			if !slices.Contains(demoQueues, q) {
				continue
			}
			info, err := l.inspect.GetQueueInfo(q)
			if err != nil {
				busy++
				continue
			}
			busy += info.Pending + info.Active + info.Retry
		}
		p.update(ctx, l.total())
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}

func (l *demoLoad) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.enqueued
}
