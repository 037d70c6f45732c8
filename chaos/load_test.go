package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/middleware"
)

// taskRef is a task the load enqueued or made due, to be found again by
// the checks.
type taskRef struct {
	queue, id, kind, orderID string
	// retained tasks were enqueued with asynq.Retention, so they stay
	// visible as completed; the others (revokes, which the checkout
	// scheduled) are deleted when they complete.
	retained bool
	// at is when its enqueue returned: a Redis restart that lost the
	// writes of a window (see lossWindow) may have lost it with them.
	at time.Time
}

// kindQueue is each kind's queue, as jobs.NewTask and the admin API pick it.
var kindQueue = func() map[string]string {
	m := map[string]string{}
	for _, tt := range (&jobs.Service{}).TaskTypes() {
		m[tt.Type] = tt.Queue
	}
	return m
}()

// shopTicketTypes are the demo's scarce tickets, for about orders checkouts:
// two events, each event's checkouts asking for about twice its largest type.
func shopTicketTypes(orders int) []ledger.TicketType {
	return []ledger.TicketType{
		{ID: "gold", Event: "arena", Name: "Gold circle", Capacity: int64(max(3, orders/30)), Price: 12_000, Currency: "EUR"},
		{ID: "stand", Event: "arena", Name: "Stand", Capacity: int64(max(5, orders/10)), Price: 6_500, Currency: "EUR"},
		{ID: "floor", Event: "arena", Name: "Floor", Capacity: int64(max(10, orders/4)), Price: 3_900, Currency: "EUR"},
		{ID: "bar", Event: "jazz", Name: "Bar", Capacity: int64(max(5, orders/8)), Price: 5_500, Currency: "EUR"},
		{ID: "dancefloor", Event: "jazz", Name: "Dance floor", Capacity: int64(max(10, 3*orders/10)), Price: 2_900, Currency: "EUR"},
	}
}

// load is the producer: the shop's checkouts in this process, and the
// payments, duplicate webhooks, revokes, refunds and late payments that
// follow each, through the asynq client and the workers' HTTP API.
type load struct {
	seed    uint64
	svc     *jobs.Service
	inspect *asynq.Inspector
	admins  []string
	http    *http.Client
	types   []ledger.TicketType

	mu                sync.Mutex
	tasks             []taskRef
	reserved, soldOut int
	viaAPI            int
	// vanished counts checkouts, reads and revokes that found their
	// order, ticket type or scheduled revoke gone: a Redis restart lost
	// it. Only a run with restarts may have any.
	vanished int
	errs     []error
}

// retryFor bounds how long one step is retried after an error that
// retrying may cure (Redis busy, a worker's API down). A paused worker
// keeps its place in the lock queues: each hand-off to one of its waiters
// costs the lock's TTL (5 s) before the lock frees, and with a few of them
// queued a checkout waited past 30 s (a CI run, seed 1796062190331302096).
const retryFor = 90 * time.Second

// retry runs step until it succeeds, final says its error is an answer,
// ctx ends or retryFor passes. Every step retried is safe to repeat: a
// checkout under its order ID reserves once, an enqueue under its task ID
// enqueues once.
func retry(ctx context.Context, step func() error, final func(error) bool) error {
	deadline := time.Now().Add(retryFor)
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		err := step()
		if err == nil || final(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %w", retryFor, err)
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, context.Cause(ctx))
		case <-time.After(wait):
		}
	}
}

func checkoutFinal(err error) bool {
	_, bad := errors.AsType[*middleware.PayloadError](err)
	return errors.Is(err, jobs.ErrSoldOut) || errors.Is(err, jobs.ErrOrderExists) || errors.Is(err, ledger.ErrNotFound) || bad
}

// run starts a scenario every 1/rate until stop closes, then waits for
// the scenarios under way. It returns how many it started.
func (l *load) run(ctx context.Context, rate float64, stop <-chan struct{}) int {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return i
		case <-ctx.Done():
			return i
		case <-tick.C:
		}
		wg.Go(func() { l.scenario(ctx, i) })
	}
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// scenario is one order's life, drawn from its own PCG stream of the
// seed so that a seed repeats each order's choices whatever the timing.
func (l *load) scenario(ctx context.Context, i int) {
	r := rand.New(rand.NewPCG(l.seed, uint64(i))) //nolint:gosec // G404: a seeded workload, reproducible by CHAOS_SEED.
	id := fmt.Sprintf("o-%05d", i)
	var o *ledger.Order
	err := retry(ctx, func() (err error) {
		o, err = l.svc.Reserve(ctx, id, l.items(r))
		return err
	}, checkoutFinal)
	l.mu.Lock()
	switch {
	case err == nil:
		l.reserved++
	case errors.Is(err, jobs.ErrSoldOut):
		l.soldOut++
	}
	l.mu.Unlock()
	if err != nil {
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			l.vanish() // its ticket type, in a Redis wiped and not yet restocked
		case !errors.Is(err, jobs.ErrSoldOut):
			l.fail(fmt.Errorf("checkout %s: %w", id, err))
		}
		return
	}
	switch x := r.Float64(); {
	case x < 0.15: // the payment window closes as the payment arrives
		l.revokeNow(ctx, id)
		l.pay(ctx, r, o, "a")
	case x < 0.25: // never paid
		l.revokeNow(ctx, id)
	default:
		l.pay(ctx, r, o, "a")
		if r.Float64() < 0.3 { // the gateway sends its webhook twice
			l.pay(ctx, r, o, "b")
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(300*time.Millisecond + time.Duration(r.IntN(700))*time.Millisecond):
	}
	o, err = l.svc.Store.Order(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		l.vanish() // reserved in writes a Redis restart lost
		return
	}
	if err != nil {
		l.fail(fmt.Errorf("read order %s: %w", id, err))
		return
	}
	x, half := r.Float64(), r.Float64()
	switch {
	case o.State == ledger.StatePaid && x < 0.35:
		// Two refund requests race; together they may ask for too much.
		second := o.Amount / 2
		if half < 0.4 {
			second = o.Amount
		}
		l.enqueue(ctx, r, jobs.RefundArgs{OrderID: o.ID, RefundID: o.ID + "-r1", Amount: o.Amount / 2, Currency: o.Currency})
		l.enqueue(ctx, r, jobs.RefundArgs{OrderID: o.ID, RefundID: o.ID + "-r2", Amount: second, Currency: o.Currency})
	case o.State == ledger.StateRevoked && o.Paid == 0 && x < 0.3:
		l.pay(ctx, r, o, "late")
	}
}

// items is an order of one event (jobs.ErrMixedEvents): each of its types
// with probability 0.45, its largest if none.
func (l *load) items(r *rand.Rand) []ledger.Item {
	// The first type's event or the last one's: shopTicketTypes has two.
	event := l.types[r.IntN(2)*(len(l.types)-1)].Event
	var items []ledger.Item
	largest := ""
	for _, tt := range l.types {
		if tt.Event != event {
			continue
		}
		largest = tt.ID
		if r.Float64() < 0.45 {
			items = append(items, ledger.Item{TicketType: tt.ID, Quantity: 1 + r.Int64N(3)})
		}
	}
	if len(items) == 0 {
		items = []ledger.Item{{TicketType: largest, Quantity: 1}}
	}
	return items
}

func (l *load) pay(ctx context.Context, r *rand.Rand, o *ledger.Order, webhook string) {
	l.enqueue(ctx, r, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: o.ID + "-" + webhook, Amount: o.Amount, Currency: o.Currency})
}

func (l *load) record(ref taskRef) {
	ref.at = time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tasks = append(l.tasks, ref)
}

func (l *load) vanish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.vanished++
}

// enqueue sends a payment or refund task: three in ten through a worker's
// HTTP API (falling back to the next worker, then to the client, when one
// is down or paused), the rest through the asynq client. Both keep the
// task an hour once done, so the checks see how it ended.
func (l *load) enqueue(ctx context.Context, r *rand.Rand, args jobs.Args) {
	orderID, key := "", ""
	switch a := args.(type) {
	case jobs.ConfirmArgs:
		orderID, key = a.OrderID, a.WebhookID
	case jobs.RefundArgs:
		orderID, key = a.OrderID, a.RefundID
	}
	viaAPI, first := r.Float64() < 0.3, r.IntN(len(l.admins))
	if viaAPI {
		for n := range len(l.admins) {
			id, err := l.enqueueAPI(ctx, l.admins[(first+n)%len(l.admins)], args, key)
			if err == nil {
				l.record(taskRef{queue: kindQueue[args.Kind()], id: id, kind: args.Kind(), orderID: orderID, retained: true})
				l.mu.Lock()
				l.viaAPI++
				l.mu.Unlock()
				return
			}
		}
	}
	task, err := jobs.NewTask(ctx, args, asynq.Retention(time.Hour))
	if err != nil {
		l.fail(err)
		return
	}
	err = retry(ctx, func() error {
		_, err := l.svc.Client.EnqueueContext(ctx, task)
		return err
	}, func(err error) bool { return errors.Is(err, asynq.ErrTaskIDConflict) })
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) { // a conflict: an earlier try got through
		l.fail(fmt.Errorf("enqueue %s: %w", args.Kind(), err))
		return
	}
	l.record(taskRef{queue: kindQueue[args.Kind()], id: taskIDOf(args), kind: args.Kind(), orderID: orderID, retained: true})
}

// taskIDOf is the task ID jobs.NewTask gives args.
func taskIDOf(args jobs.Args) string {
	switch a := args.(type) {
	case jobs.ConfirmArgs:
		return "confirm:" + a.WebhookID
	case jobs.RefundArgs:
		return "refund:" + a.RefundID
	}
	return ""
}

// enqueueAPI is POST /api/v1/tasks/{type} on one worker, with the request's
// own idempotency key, so that a retry after a lost answer enqueues once.
func (l *load) enqueueAPI(ctx context.Context, addr string, args jobs.Args, key string) (string, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second) // a paused worker answers nothing
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/v1/tasks/"+args.Kind(), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := l.http.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var got struct {
		TaskID string `json:"task_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return "", fmt.Errorf("enqueue over HTTP: status %d: %w", resp.StatusCode, err)
	}
	if (resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK) || got.TaskID == "" {
		return "", fmt.Errorf("enqueue over HTTP: status %d", resp.StatusCode)
	}
	return got.TaskID, nil
}

// revokeNow makes the revoke the checkout scheduled due at once, as the
// end of the payment window would.
func (l *load) revokeNow(ctx context.Context, orderID string) {
	q, id := kindQueue[jobs.KindRevoke], "revoke:"+orderID
	err := retry(ctx, func() error { return l.inspect.RunTask(q, id) }, func(err error) bool {
		return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
	})
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound):
		l.vanish() // scheduled in writes a Redis restart lost
		return
	case err != nil:
		l.fail(fmt.Errorf("run %s now: %w", id, err))
		return
	}
	l.record(taskRef{queue: q, id: id, kind: jobs.KindRevoke, orderID: orderID})
}
