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

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
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
	// commands are the Redis commands run per task (-commandstats only).
	commands string
}

// process empties Redis, enqueues tasks, starts a server in mode m and
// waits until done reports true, then calls then with what it measured.
//
// With detach the phase runs on a redis-server of its own, and once
// nothing runs and every task left waits in asynq's retry set (a peer's
// give-up, waiting out asynq's 15-44 s retry delay, or a task turnstile
// could not park), process returns and the phase finishes in the
// background: then runs when it is done, and drain waits for that. An idle
// tail costs the next phase a few polls a second, and lets the default run
// fit in minutes. Phases that measure CPU never detach and never overlap.
func (b *bench) process(ctx context.Context, m mode, tasks []payload, r *recorder, done func() bool,
	detach bool, then func(phase) error,
) (err error) {
	pb, closeFn := b, func() error { return nil }
	if detach {
		if pb, closeFn, err = b.newEnv(ctx); err != nil {
			return err
		}
	}
	closeEnv := sync.OnceValue(closeFn)
	defer func() {
		if err != nil {
			err = errors.Join(err, closeEnv())
		}
	}()
	r.rdb = pb.rdb
	if err := pb.rdb.FlushAll(ctx).Err(); err != nil { // our own server
		return err
	}
	if err := pb.rdb.Set(ctx, stockKey, len(tasks), 0).Err(); err != nil {
		return err
	}
	if err := pb.enqueue(ctx, tasks); err != nil {
		return err
	}
	srv, err := pb.newServer(m, r)
	if err != nil {
		return err
	}
	redis0, err := pb.srv.CPU(ctx)
	if err != nil {
		return err
	}
	var calls0 map[string]int64
	if b.cfg.commandStats && !detach {
		if calls0, err = commandCalls(ctx, pb.rdb); err != nil {
			return err
		}
	}
	worker0 := processCPU()
	r.start = time.Now()
	if err := srv.start(); err != nil {
		return err
	}
	idle := func() bool { return false }
	if detach {
		idle = func() bool { return pb.idle(ctx) }
	}
	finished, err := waitIdle(ctx, done, idle)
	if err != nil {
		return errors.Join(err, srv.shutdown(context.WithoutCancel(ctx)))
	}
	if finished {
		ph := phase{wall: time.Since(r.start), workerCPU: processCPU() - worker0}
		redis1, err := pb.srv.CPU(ctx)
		ph.redisCPU = redis1 - redis0
		if calls0 != nil && err == nil {
			var calls1 map[string]int64
			calls1, err = commandCalls(ctx, pb.rdb)
			ph.commands = perTask(calls0, calls1, len(tasks))
		}
		if err = errors.Join(err, srv.shutdown(ctx)); err == nil {
			err = then(ph) // before closeEnv: then may read the phase's Redis
		}
		return errors.Join(err, closeEnv())
	}
	b.tails.Go(func() {
		err := waitFor(ctx, done)
		ph := phase{wall: time.Since(r.start)} // CPU: other phases ran meanwhile
		err = errors.Join(err, srv.shutdown(context.WithoutCancel(ctx)))
		if err == nil {
			err = then(ph)
		}
		if err = errors.Join(err, closeEnv()); err != nil {
			b.mu.Lock()
			b.tailErrs = append(b.tailErrs, fmt.Errorf("%s: %w", m, err))
			b.mu.Unlock()
		}
	})
	return nil
}

// newEnv starts a redis-server of a phase's own and returns a bench that
// uses it.
func (b *bench) newEnv(ctx context.Context) (*bench, func() error, error) {
	srv, err := redisserver.Start(ctx, b.cfg.redisServer)
	if err != nil {
		return nil, nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 4 * b.cfg.concurrency})
	env := &bench{cfg: b.cfg, srv: srv, rdb: rdb, tel: b.tel}
	return env, func() error { return errors.Join(rdb.Close(), srv.Stop()) }, nil
}

// idle reports whether no task is pending or running and some wait in the
// retry set: nothing happens until asynq's delay runs out.
func (b *bench) idle(ctx context.Context) bool {
	var pending, active *redis.IntCmd
	var retry *redis.IntCmd
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, "asynq:{default}:pending")
		active = p.LLen(ctx, "asynq:{default}:active")
		retry = p.ZCard(ctx, "asynq:{default}:retry")
		return nil
	})
	return err == nil && pending.Val() == 0 && active.Val() == 0 && retry.Val() > 0
}

// drain waits for the phases finishing in the background.
func (b *bench) drain() error {
	b.tails.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	err := errors.Join(b.tailErrs...)
	b.tailErrs = nil
	return err
}

// idleCheckEvery is how often waitIdle asks Redis whether a phase is idle;
// more often would load the Redis it measures.
const idleCheckEvery = 50 * time.Millisecond

// waitIdle waits until done reports true (finished) or idle does (not
// finished), up to phaseTimeout.
func waitIdle(ctx context.Context, done, idle func() bool) (finished bool, err error) {
	deadline := time.After(phaseTimeout)
	next := time.Now().Add(idleCheckEvery)
	for !done() {
		if time.Now().After(next) {
			if idle() {
				return false, nil
			}
			next = time.Now().Add(idleCheckEvery)
		}
		select {
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-deadline:
			return false, fmt.Errorf("phase not done after %s", phaseTimeout)
		case <-time.After(time.Millisecond):
		}
	}
	return true, nil
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
	err = b.process(ctx, m, tasks, r, func() bool { return r.cold.Load() == int64(n) }, false, func(ph phase) error {
		per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
		perS, workerUS, redisUS = float64(n)/time.Duration(r.coldEnd.Load()).Seconds(), per(ph.workerCPU), per(ph.redisCPU)
		if ph.commands != "" {
			progress("%s, %d tasks, hold %s: per task %s", m, n, hold, ph.commands)
		}
		return nil
	})
	return perS, workerUS, redisUS, err
}

// hotOnly runs n tasks on one key, each holding it for hold, and passes
// then the time until the last was done over the serial ideal: the
// handlers' measured times summed, so that sleep overshoot counts as work.
// It may finish in the background (see process).
func (b *bench) hotOnly(ctx context.Context, m mode, n int, hold time.Duration, then func(ratio float64)) error {
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey, Hold: hold.Microseconds()}
	}
	r := newRecorder(b.rdb, n, 0)
	return b.process(ctx, m, tasks, r, func() bool { return r.hot.Load() == int64(n) }, true, func(phase) error {
		then(float64(r.hotEnd.Load()) / float64(r.hotHeld.Load()))
		return nil
	})
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
	var perS float64
	err := b.process(ctx, m, tasks, r, func() bool { return r.cold.Load() == int64(cold) }, false, func(phase) error {
		perS = float64(cold) / time.Duration(r.coldEnd.Load()).Seconds()
		return nil
	})
	return perS, err
}

// sale is what one flash sale measured.
type sale struct {
	perS, p99ms float64
	sold, start int64
	final       int64
	lost        int64 // start - sold - final: sales whose write was lost
	exact       bool
}

// flash sells n units of stock with n tasks on one resource and passes
// then what it saw. Each task's latency runs from the server's start,
// since all were enqueued before. It may finish in the background (see
// process).
func (b *bench) flash(ctx context.Context, m mode, n int, then func(sale)) error {
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey, Sale: true}
	}
	r := newRecorder(b.rdb, n, 0)
	return b.process(ctx, m, tasks, r, func() bool { return r.hot.Load() == int64(n) }, true, func(phase) error {
		// The background phase's Redis is still up: then runs before closeEnv.
		final, err := r.rdb.Get(context.WithoutCancel(ctx), stockKey).Int64()
		if err != nil {
			return fmt.Errorf("read the stock: %w", err)
		}
		s := sale{sold: r.sold.Load(), start: int64(n), final: final}
		s.lost = final - (s.start - s.sold)
		s.exact = s.lost == 0
		s.perS = float64(s.sold) / time.Duration(r.hotEnd.Load()).Seconds()
		r.mu.Lock()
		s.p99ms = float64(percentile(r.doneAt, 0.99)) / float64(time.Millisecond)
		r.mu.Unlock()
		then(s)
		return nil
	})
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
