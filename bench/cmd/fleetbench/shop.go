package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/worker"
)

// queues are the queues the shop's tasks go to (jobs.NewTask's choice).
var queues = []string{"critical", "default"}

// ticketTypes is how many ticket types the shop sells: enough that
// checkouts from producers seldom wait on one type's inventory lock.
// They are for events ticket types, each event's ledger under a hash tag
// of its own, so that on a cluster the shop spreads as a shop with a few
// events on sale would.
const (
	ticketTypes = 16
	events      = 4
)

// senders is how many goroutines enqueue and check out at once.
const senders = 16

// shop is fleetbench's producer: the shop's jobs.Service in this process,
// on the fleet's Redis, with the ledger and gateway simulator under the
// prefixes the workers use (the defaults), so the workers see its orders
// and Check sees the workers' writes.
type shop struct {
	rdb     redis.UniversalClient
	close   func() error
	store   *ledger.Store
	gw      *gateway.Simulator
	locker  *lock.Locker
	client  *asynq.Client
	inspect *asynq.Inspector
	svc     *jobs.Service
}

func openShop(ctx context.Context, url string) (*shop, error) {
	cfg := worker.DefaultConfig()
	cfg.RedisURL = url
	rdb, closeRedis, err := worker.OpenRedis(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	locker, err := lock.New(rdb, lock.Config{TTL: 5 * time.Second, Wait: 5 * time.Second})
	if err != nil {
		return nil, errors.Join(err, closeRedis())
	}
	// The producer's gateway only captures the payments of orders set up
	// as paid; its latency stands for a real gateway's, kept small.
	gw, err := gateway.NewSimulator(rdb, gateway.Config{Latency: time.Millisecond})
	if err != nil {
		return nil, errors.Join(err, locker.Close(), closeRedis())
	}
	s := &shop{
		rdb: rdb, store: ledger.New(rdb, ""), gw: gw, locker: locker,
		client: asynq.NewClientFromRedisClient(rdb), inspect: asynq.NewInspectorFromRedisClient(rdb),
	}
	// An hour's window: no revoke that a checkout schedules runs during a
	// run unless the run asks for it.
	s.svc = &jobs.Service{Store: s.store, Gateway: gw, Locker: locker, Client: s.client, PaymentWindow: time.Hour}
	s.close = func() error { return errors.Join(locker.Close(), closeRedis()) }
	return s, nil
}

// addTicketTypes stocks the shop with more tickets than any run sells.
func (s *shop) addTicketTypes(ctx context.Context) error {
	for i := range ticketTypes {
		tt := ledger.TicketType{
			ID: ticketTypeID(i), Event: fmt.Sprintf("ev-%d", i%events), Name: fmt.Sprintf("Type %d", i),
			Capacity: 1 << 40, Price: 5_000 + 100*int64(i), Currency: "EUR",
		}
		if err := s.store.AddTicketType(ctx, tt); err != nil {
			return err
		}
	}
	return nil
}

func ticketTypeID(i int) string { return fmt.Sprintf("tt-%02d", i%ticketTypes) }

// checkout is one order to reserve.
type checkout struct {
	id    string
	items []ledger.Item
	paid  bool // set up as paid: its payment captured by the producer
}

// reserve reserves the orders from senders goroutines, and pays those
// marked paid (jobs.Service.Confirm, run here without a lock: nothing else
// touches a new order yet). It returns the orders by ID.
func (s *shop) reserve(ctx context.Context, cs []checkout) (map[string]*ledger.Order, error) {
	var (
		mu     sync.Mutex
		orders = make(map[string]*ledger.Order, len(cs))
		next   atomic.Int64
		wg     sync.WaitGroup
		errs   = make([]error, senders)
	)
	for g := range senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(cs) || errs[g] != nil || ctx.Err() != nil {
					return
				}
				c := cs[i]
				o, err := s.svc.Reserve(ctx, c.id, c.items)
				if err == nil && c.paid {
					err = s.svc.Confirm(ctx, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: o.ID + "-setup", Amount: o.Amount, Currency: o.Currency})
					o.State, o.Paid = ledger.StatePaid, o.Amount
				}
				if err != nil {
					errs[g] = fmt.Errorf("check out %s: %w", c.id, err)
					return
				}
				mu.Lock()
				orders[o.ID] = o
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return orders, context.Cause(ctx)
}

// job is one task to enqueue, and the notification its commit writes, by
// which its completion time is read back ("" when the task commits none:
// a duplicate webhook, the revoke of a paid order).
type job struct {
	task *asynq.Task
	note string
}

// enqueue enqueues jobs from senders goroutines, job i not before at(i)
// when at is set, and returns when each enqueue began.
func (s *shop) enqueue(ctx context.Context, js []job, at func(i int) time.Time) ([]time.Time, error) {
	began := make([]time.Time, len(js))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make([]error, senders)
	)
	for g := range senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(js) || errs[g] != nil || ctx.Err() != nil {
					return
				}
				if at != nil {
					if d := time.Until(at(i)); d > 0 {
						time.Sleep(d)
					}
				}
				began[i] = time.Now()
				if _, err := s.client.EnqueueContext(ctx, js[i].task); err != nil {
					errs[g] = fmt.Errorf("enqueue %s %s: %w", js[i].task.Type(), js[i].note, err)
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return began, context.Cause(ctx)
}

// processed is the number of tasks the workers finished on the shop's
// queues, successes and failures, since the queues were created: asynq's
// per-queue counter, which a task given back because its lock was busy
// does not move.
func (s *shop) processed(ctx context.Context) (int64, error) {
	var total int64
	for _, q := range queues {
		n, err := s.rdb.Get(ctx, "asynq:{"+q+"}:processed").Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, fmt.Errorf("processed count of %s: %w", q, err)
		}
		total += n
	}
	return total, nil
}

// awaitProcessed polls until the workers have processed want tasks since
// base and returns when it saw that.
func (s *shop) awaitProcessed(ctx context.Context, base, want int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := s.processed(ctx)
		if err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		if n-base >= want {
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("%d of %d tasks processed after %s", n-base, want, timeout)
		}
		select {
		case <-ctx.Done():
			return now, context.Cause(ctx)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// leftOver reports tasks still waiting, retrying or archived, which a
// finished run must not have (the checkouts' revokes stay scheduled).
func (s *shop) leftOver() error {
	known, err := s.inspect.Queues()
	if err != nil {
		return fmt.Errorf("list queues: %w", err)
	}
	for _, q := range queues {
		if !slices.Contains(known, q) {
			continue // nothing was ever enqueued to it
		}
		info, err := s.inspect.GetQueueInfo(q)
		if err != nil {
			return fmt.Errorf("queue %s: %w", q, err)
		}
		if n := info.Pending + info.Active + info.Retry + info.Archived; n > 0 {
			return fmt.Errorf("queue %s: %d pending, %d active, %d retrying, %d archived after the run",
				q, info.Pending, info.Active, info.Retry, info.Archived)
		}
	}
	return nil
}

// pause stops the workers taking tasks, so a backlog can be enqueued and
// timed from when it is let go.
func (s *shop) pause() error {
	for _, q := range queues {
		if err := s.inspect.PauseQueue(q); err != nil {
			return fmt.Errorf("pause %s: %w", q, err)
		}
	}
	return nil
}

func (s *shop) unpause() error {
	for _, q := range queues {
		if err := s.inspect.UnpauseQueue(q); err != nil {
			return fmt.Errorf("unpause %s: %w", q, err)
		}
	}
	return nil
}

// check runs jobs.Check over everything in the ledger.
func (s *shop) check(ctx context.Context) (jobs.Report, error) {
	return jobs.Check(ctx, s.store, s.gw)
}

// latencies returns, for each job that names a notification, the time
// from when its enqueue began to when its handler wrote the notification,
// just before its commit; missing counts the jobs whose notification is
// not there.
func (s *shop) latencies(ctx context.Context, js []job, began []time.Time) (ds []time.Duration, missing int, err error) {
	notes, _, err := s.store.Outbox(ctx)
	if err != nil {
		return nil, 0, err
	}
	for i, j := range js {
		if j.note == "" {
			continue
		}
		n, ok := notes[j.note]
		if !ok {
			missing++
			continue
		}
		ds = append(ds, n.At.Sub(began[i]))
	}
	return ds, missing, nil
}
