package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

const (
	taskType = "bench:hold"
	hotKey   = "hot"
	stockKey = "bench:stock"
	// maxRetry is high enough that no peer task runs out of retries
	// (asynq's default); taskTimeout is the worker's default.
	maxRetry    = 25
	taskTimeout = 30 * time.Second
)

// payload is every task's body.
type payload struct {
	Key  string `json:"key"`
	Hold int64  `json:"hold_us,omitempty"`
	// Sale makes the task sell one unit of stock: GET, then SET one less.
	Sale bool `json:"sale,omitempty"`
	// Block makes the task hold its key until the bench lets it go.
	Block bool `json:"block,omitempty"`
}

func keys(t *asynq.Task) ([]lock.Resource, error) {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return nil, &middleware.PayloadError{Field: "(body)", Problem: err.Error()}
	}
	return []lock.Resource{lock.Key("bench", p.Key)}, nil
}

// recorder is a phase's handler and what it saw.
type recorder struct {
	rdb              *redis.Client
	wantHot, wantCol int64
	start            time.Time // set before the server starts

	hot, cold       atomic.Int64
	hotEnd, coldEnd atomic.Int64 // ns since start
	hotHeld         atomic.Int64 // ns the hot tasks' handlers took, summed
	sold            atomic.Int64

	mu     sync.Mutex
	doneAt []time.Duration // hot tasks' completion, since start

	blocking chan struct{} // closed once a Block task runs
	release  chan struct{} // closed by letGo to end the Block task
	once     sync.Once
	letOnce  sync.Once
}

// letGo ends the Block task.
func (r *recorder) letGo() { r.letOnce.Do(func() { close(r.release) }) }

func newRecorder(rdb *redis.Client, wantHot, wantCold int) *recorder {
	return &recorder{
		rdb: rdb, wantHot: int64(wantHot), wantCol: int64(wantCold),
		blocking: make(chan struct{}), release: make(chan struct{}),
	}
}

func (r *recorder) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return err
	}
	began := time.Now()
	switch {
	case p.Block:
		r.once.Do(func() { close(r.blocking) })
		select {
		case <-r.release:
		case <-ctx.Done():
		}
		return nil
	case p.Sale:
		if err := r.sell(ctx); err != nil {
			return err
		}
	case p.Hold > 0:
		time.Sleep(time.Duration(p.Hold) * time.Microsecond)
	default:
	}
	end := time.Now()
	if p.Key == hotKey {
		r.hotHeld.Add(int64(end.Sub(began)))
		r.mu.Lock()
		r.doneAt = append(r.doneAt, end.Sub(r.start))
		r.mu.Unlock()
		if r.hot.Add(1) == r.wantHot {
			r.hotEnd.Store(int64(end.Sub(r.start)))
		}
	} else if r.cold.Add(1) == r.wantCol {
		r.coldEnd.Store(int64(end.Sub(r.start)))
	}
	return nil
}

// sell is the flash sale's read-modify-write: sell one unit if any is left.
func (r *recorder) sell(ctx context.Context) error {
	stock, err := r.rdb.Get(ctx, stockKey).Int64()
	if err != nil {
		return fmt.Errorf("get stock: %w", err)
	}
	if stock <= 0 {
		return nil
	}
	if err := r.rdb.Set(ctx, stockKey, stock-1, 0).Err(); err != nil {
		return fmt.Errorf("set stock: %w", err)
	}
	r.sold.Add(1)
	return nil
}

// phaseTimeout bounds one phase; a guard that lost wake-ups would hang.
const phaseTimeout = 5 * time.Minute

// phase is the CPU time the worker process and redis-server used until a
// phase's tasks were done.
type phase struct {
	wall                time.Duration
	workerCPU, redisCPU time.Duration
}

// process empties Redis, runs setup, enqueues tasks, starts a server in
// mode m and waits until done reports true.
func (b *bench) process(ctx context.Context, m mode, tasks []payload, r *recorder, done func() bool) (phase, error) {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil { // our own server
		return phase{}, err
	}
	if err := b.rdb.Set(ctx, stockKey, len(tasks), 0).Err(); err != nil {
		return phase{}, err
	}
	if err := b.enqueue(ctx, tasks); err != nil {
		return phase{}, err
	}
	srv, err := b.newServer(m, r)
	if err != nil {
		return phase{}, err
	}
	redis0, err := b.srv.CPU(ctx)
	if err != nil {
		return phase{}, err
	}
	worker0 := processCPU()
	r.start = time.Now()
	if err := srv.start(); err != nil {
		return phase{}, err
	}
	if err := waitFor(ctx, done); err != nil {
		return phase{}, errors.Join(err, srv.shutdown(context.WithoutCancel(ctx)))
	}
	ph := phase{wall: time.Since(r.start), workerCPU: processCPU() - worker0}
	redis1, err := b.srv.CPU(ctx)
	ph.redisCPU = redis1 - redis0
	return ph, errors.Join(err, srv.shutdown(ctx))
}

// waitFor polls done every millisecond, up to phaseTimeout.
func waitFor(ctx context.Context, done func() bool) error {
	deadline := time.After(phaseTimeout)
	for !done() {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-deadline:
			return fmt.Errorf("phase not done after %s", phaseTimeout)
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// enqueue enqueues tasks from a few goroutines; it is not measured.
func (b *bench) enqueue(ctx context.Context, tasks []payload) error {
	client := asynq.NewClientFromRedisClient(b.rdb)
	opts := []asynq.Option{asynq.MaxRetry(maxRetry), asynq.Timeout(taskTimeout)}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		mu   sync.Mutex
		errs []error
	)
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(tasks)); i = next.Add(1) - 1 {
				body, err := json.Marshal(tasks[i])
				if err == nil {
					_, err = client.EnqueueContext(ctx, asynq.NewTask(taskType, body), opts...)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// distinct runs n tasks on distinct keys, each holding its key for hold,
// and returns tasks/s and CPU µs per task.
func (b *bench) distinct(ctx context.Context, m mode, n int, hold time.Duration) (perS, workerUS, redisUS float64, err error) {
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: "k" + strconv.Itoa(i), Hold: hold.Microseconds()}
	}
	r := newRecorder(b.rdb, 0, n)
	ph, err := b.process(ctx, m, tasks, r, func() bool { return r.cold.Load() == int64(n) })
	if err != nil {
		return 0, 0, 0, err
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	return float64(n) / time.Duration(r.coldEnd.Load()).Seconds(), per(ph.workerCPU), per(ph.redisCPU), nil
}

// hotOnly runs n tasks on one key, each holding it for hold, and returns
// the time until the last was done over the serial ideal: the handlers'
// measured times summed, so that sleep overshoot counts as work.
func (b *bench) hotOnly(ctx context.Context, m mode, n int, hold time.Duration) (float64, error) {
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey, Hold: hold.Microseconds()}
	}
	r := newRecorder(b.rdb, n, 0)
	if _, err := b.process(ctx, m, tasks, r, func() bool { return r.hot.Load() == int64(n) }); err != nil {
		return 0, err
	}
	return float64(r.hotEnd.Load()) / float64(r.hotHeld.Load()), nil
}

// beside runs cold tasks on distinct keys and hot tasks on one key, each
// holding its key for hold, enqueued in a shuffled order, and returns the
// cold tasks' rate. The phase ends when the cold tasks are done.
func (b *bench) beside(ctx context.Context, m mode, cold, hot int, hold time.Duration) (float64, error) {
	tasks := make([]payload, 0, cold+hot)
	for i := range cold {
		tasks = append(tasks, payload{Key: "k" + strconv.Itoa(i), Hold: hold.Microseconds()})
	}
	for range hot {
		tasks = append(tasks, payload{Key: hotKey, Hold: hold.Microseconds()})
	}
	//nolint:gosec // G404: a fixed seed, so that every round and run shuffles alike.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(tasks), func(i, j int) { tasks[i], tasks[j] = tasks[j], tasks[i] })
	r := newRecorder(b.rdb, hot, cold)
	if _, err := b.process(ctx, m, tasks, r, func() bool { return r.cold.Load() == int64(cold) }); err != nil {
		return 0, err
	}
	return float64(cold) / time.Duration(r.coldEnd.Load()).Seconds(), nil
}

// sale is what one flash sale measured.
type sale struct {
	perS, p99ms float64
	sold, start int64
	final       int64
	lost        int64 // start - sold - final: sales whose write was lost
	exact       bool
}

// flash sells n units of stock with n tasks on one resource. Each task's
// latency runs from the server's start, since all were enqueued before.
func (b *bench) flash(ctx context.Context, m mode, n int) (sale, error) {
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey, Sale: true}
	}
	r := newRecorder(b.rdb, n, 0)
	if _, err := b.process(ctx, m, tasks, r, func() bool { return r.hot.Load() == int64(n) }); err != nil {
		return sale{}, err
	}
	final, err := b.rdb.Get(ctx, stockKey).Int64()
	if err != nil {
		return sale{}, fmt.Errorf("read the stock: %w", err)
	}
	s := sale{sold: r.sold.Load(), start: int64(n), final: final}
	s.lost = final - (s.start - s.sold)
	s.exact = s.lost == 0
	s.perS = float64(s.sold) / time.Duration(r.hotEnd.Load()).Seconds()
	r.mu.Lock()
	s.p99ms = float64(percentile(r.doneAt, 0.99)) / float64(time.Millisecond)
	r.mu.Unlock()
	return s, nil
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
