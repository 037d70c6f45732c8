package middleware

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/autopipe"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
)

// Defaults of a Rule and a GuardConfig.
const (
	DefaultLockTTL      = 10 * time.Second
	DefaultWait         = time.Second
	DefaultSlotsPerKey  = 2
	DefaultSafetyNet    = 5 * time.Minute
	DefaultMaxBusy      = 1000
	DefaultBusyDeadline = time.Hour
)

// A KeyFunc derives from a task's payload the resources it must hold. It
// returns a *PayloadError when the payload cannot be decoded or is invalid.
type KeyFunc func(t *asynq.Task) ([]lock.Resource, error)

// A Rule guards one task type.
type Rule struct {
	Type string
	Keys KeyFunc
	// MaxRetry and Timeout are the type's enqueue options. The guard needs
	// a retry to park a task and a timeout of whole seconds (asynq stores
	// timeouts in seconds).
	MaxRetry int
	Timeout  time.Duration
	// TTL is the lock's TTL (default DefaultLockTTL); a Timeout beyond it
	// makes the lease refresh itself while the handler runs.
	TTL time.Duration
	// Wait is how long a task holding one of the key's waiting slots waits
	// for the release (default DefaultWait; negative: never wait, park at
	// once).
	Wait time.Duration
	// MaxHold caps how long a task keeps its lease after asynq has given
	// up on it (default twice the Timeout): a handler that ignores its
	// context's cancellation cannot keep the resource forever. Only
	// refreshing leases need it; the others end with their TTL.
	MaxHold time.Duration
	// MaxBusy and BusyDeadline bound how often, and for how long since
	// the first time, a task may find its keys busy before it is archived
	// (defaults DefaultMaxBusy and DefaultBusyDeadline).
	MaxBusy      int
	BusyDeadline time.Duration
}

// GuardConfig configures a Guard. The zero value is usable but for Queues.
type GuardConfig struct {
	// Queues are the queues the worker serves: a release wakes the tasks
	// parked on its keys in each of them, and in every other queue a task
	// parked on them from.
	Queues []string
	// SlotsPerKey is how many tasks per key and process may wait for a
	// release instead of parking (default DefaultSlotsPerKey).
	SlotsPerKey int
	// Concurrency is the worker's concurrency. When set, a key may have up
	// to a quarter of it waiting while at most half of it is busy: waiting
	// tasks then take no slot another task could use, and a hot key is
	// served back to back instead of at the pace of asynq's idle polls.
	// A key may also have waiting its share of the slots, as it is of the
	// last Concurrency tasks to enter the worker: a worker that sees
	// nothing but one key's tasks has nothing else for its slots to do,
	// and a task waiting in line there is passed the lease in-process
	// (lock.Options.Cohort), while a parked one costs four round trips
	// and the dequeue of yet another task of that key. A key whose
	// waiters ran out of their budget in line gets only the slots above
	// until one is served from the line again.
	Concurrency int
	// SafetyNet caps the retry delay of a busy task, which otherwise is the
	// holder's remaining TTL plus a second (see Guard.RetryDelay); it only
	// matters when a wake-up is lost (default DefaultSafetyNet). Parked
	// lists expire a minute after it.
	SafetyNet time.Duration
	// RetryDelay is the delay before retrying a task that failed (default
	// asynq.DefaultRetryDelayFunc); busy rounds do not use it.
	RetryDelay asynq.RetryDelayFunc
	// Metrics counts busy rounds and waiting tasks; nil counts nothing.
	Metrics *telemetry.Metrics
	Logger  *slog.Logger
}

// Guard runs tasks of registered types under leases on their resources.
type Guard struct {
	// rdb sends the park and wake scripts: one wake follows every release,
	// so they batch as the lock's own scripts do.
	rdb    *autopipe.Pipe
	locker *lock.Locker
	cfg    GuardConfig
	log    *slog.Logger

	running atomic.Int64 // tasks of any type in this process's middleware

	mu      sync.Mutex
	rules   map[string]*rule
	waiting map[string]int // per first resource: tasks of this process waiting
	recent  recent         // the first resources of the last tasks to enter
	// parked holds the first resources this process parked tasks on, and
	// when it last did, until a wake-up finds none left or the parked
	// list would have expired: only those have a list to refill from.
	parked noted
	// stalled holds the first resources whose waiters ran out of their
	// budget in line, until one is served from the line again: a key held
	// that long gets no more than its base waiting slots, lest its tasks
	// sit in every slot for a whole budget before they park.
	stalled noted
	closed  bool

	inflight sync.WaitGroup // guarded handlers and their wake-ups
}

type rule struct {
	Rule
	opts lock.Options // without Wait and Owner, which vary per task
}

// NewGuard returns a Guard that takes its leases from locker and parks
// tasks in rdb, the Redis that asynq uses.
func NewGuard(locker *lock.Locker, rdb redis.UniversalClient, cfg GuardConfig) *Guard {
	cfg.SlotsPerKey = cmp.Or(cfg.SlotsPerKey, DefaultSlotsPerKey)
	cfg.SafetyNet = cmp.Or(cfg.SafetyNet, DefaultSafetyNet)
	if cfg.RetryDelay == nil {
		cfg.RetryDelay = asynq.DefaultRetryDelayFunc
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{
		rdb: autopipe.New(rdb), locker: locker, cfg: cfg, log: cfg.Logger,
		rules: make(map[string]*rule), waiting: make(map[string]int),
		recent: newRecent(cfg.Concurrency), parked: make(noted), stalled: make(noted),
	}
}

// Register guards tasks of r.Type. It refuses a rule that cannot work:
// no key function, MaxRetry < 1 (a busy round would archive the task) or a
// Timeout under one second.
func (g *Guard) Register(r Rule) error {
	switch {
	case r.Type == "" || r.Keys == nil:
		return errors.New("middleware: a rule needs a Type and a Keys function")
	case r.MaxRetry < 1:
		return fmt.Errorf("middleware: %s: MaxRetry %d: a guarded task needs at least 1 to be parked", r.Type, r.MaxRetry)
	case r.Timeout < time.Second:
		return fmt.Errorf("middleware: %s: Timeout %s is under asynq's one-second resolution", r.Type, r.Timeout)
	}
	r.TTL = cmp.Or(r.TTL, DefaultLockTTL)
	r.Wait = cmp.Or(r.Wait, DefaultWait)
	r.MaxBusy = cmp.Or(r.MaxBusy, DefaultMaxBusy)
	r.BusyDeadline = cmp.Or(r.BusyDeadline, DefaultBusyDeadline)
	r.MaxHold = cmp.Or(r.MaxHold, 2*r.Timeout)
	// A handler that may run past half the TTL gets a refreshing lease.
	opts := lock.Options{TTL: r.TTL, Refresh: r.Timeout > r.TTL/2, MaxHold: r.MaxHold}
	if _, err := g.locker.With(opts); err != nil {
		return fmt.Errorf("middleware: %s: %w", r.Type, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, dup := g.rules[r.Type]; dup {
		return fmt.Errorf("middleware: %s registered twice", r.Type)
	}
	g.rules[r.Type] = &rule{Rule: r, opts: opts}
	return nil
}

// Middleware is the asynq middleware. Tasks of types without a rule pass
// through untouched.
func (g *Guard) Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		g.running.Add(1)
		defer g.running.Add(-1)
		g.mu.Lock()
		r, closed := g.rules[t.Type()], g.closed
		if r != nil && !closed {
			g.inflight.Add(1)
		} else {
			g.recent.add("") // another kind of work wants the slots
		}
		g.mu.Unlock()
		switch {
		case r == nil:
			return next.ProcessTask(ctx, t)
		case closed:
			return fmt.Errorf("%s: %w", t.Type(), ErrShutdown)
		}
		defer g.inflight.Done()
		return g.process(ctx, r, t, next)
	})
}

func (g *Guard) process(ctx context.Context, r *rule, t *asynq.Task, next asynq.Handler) error {
	resources, err := r.Keys(t)
	if err == nil && len(resources) == 0 {
		err = errors.New("no resources to lock")
	}
	if err != nil {
		return fmt.Errorf("%s: bad payload: %w: %w", t.Type(), err, asynq.SkipRetry)
	}
	g.mu.Lock()
	g.recent.add(resources[0].String())
	g.mu.Unlock()
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	owner := Owner{TaskType: t.Type(), TaskID: id, Worker: thisWorker, Since: time.Now()}.String()

	lease, err := g.acquire(ctx, r, resources, owner, queue)
	if busy, ok := errors.AsType[*lock.BusyError](err); ok {
		return g.park(ctx, r, t, queue, id, busy)
	}
	if err != nil {
		return fmt.Errorf("%s: lock: %w", t.Type(), err)
	}

	hctx, cancel := context.WithCancelCause(ctx)
	after := &afterRelease{}
	hctx = context.WithValue(hctx, leaseKey{}, lease)
	hctx = context.WithValue(hctx, afterKey{}, after)
	// The lease outlives ctx: asynq cancels ctx and abandons the handler on
	// timeout or shutdown, but the handler may still be running, so the
	// lease refreshes until it really returns, and only its loss cancels
	// hctx on the lease's account.
	watch := make(chan struct{})
	go func() {
		select {
		case <-lease.Done():
			g.log.WarnContext(ctx, "lease lost while the handler runs; cancelling it",
				slog.String("task_type", t.Type()), slog.Duration("held", time.Since(lease.AcquiredAt())),
				slog.Any("error", lease.Err()))
			cancel(fmt.Errorf("%s: %w", t.Type(), ErrLeaseLost))
		case <-watch:
		}
	}()
	// ok stays false when the handler fails, panics or is given up on: the
	// task will run again, and its busy count starts over (a failed run
	// costs one more script; a successful one, none).
	ok := false
	defer func() {
		close(watch)
		cancel(nil)
		g.release(ctx, t, taskRef{queue, id}, lease, after)
		if !ok {
			g.forgetBusy(ctx, t, queue, id)
		}
	}()
	err = next.ProcessTask(hctx, t)
	ok = err == nil && ctx.Err() == nil
	return err
}

// acquire takes free resources at once. When they are busy it takes one
// of the first resource's waiting slots, if one is free, and waits up to
// the rule's budget for the release; otherwise the task parks, so that a
// hot key never ties up more than its share of the worker's slots. Taking
// a slot with more free behind it, on a key this process parked tasks on,
// wakes one more parked task, so the slots fill up from the parked list
// without waiting for releases.
func (g *Guard) acquire(ctx context.Context, r *rule, resources []lock.Resource, owner, queue string) (*lock.Lease, error) {
	opts := r.opts
	opts.Owner = owner
	l, err := g.locker.With(opts)
	if err != nil {
		return nil, err
	}
	lease, err := l.Acquire(ctx, resources...)
	if _, busy := errors.AsType[*lock.BusyError](err); !busy || r.Wait <= 0 {
		return lease, err
	}
	slot := resources[0].String()
	slots := g.cfg.SlotsPerKey
	c := g.cfg.Concurrency
	if c > 0 && int(g.running.Load()) <= c/2 {
		slots = max(slots, c/4)
	}
	g.mu.Lock()
	if _, stalled := g.stalled[slot]; c > 0 && !stalled {
		slots = max(slots, g.recent.counts[slot]*c/g.recent.filled)
	}
	if g.waiting[slot] >= slots {
		g.mu.Unlock()
		return nil, err
	}
	g.waiting[slot]++
	at, parked := g.parked[slot]
	refill := parked && g.waiting[slot] < slots && time.Since(at) < g.parkedTTL()
	g.mu.Unlock()
	g.cfg.Metrics.AddWaiters(ctx, 1, resources...)
	defer func() {
		g.cfg.Metrics.AddWaiters(ctx, -1, resources...)
		g.mu.Lock()
		if g.waiting[slot]--; g.waiting[slot] == 0 {
			delete(g.waiting, slot)
		}
		g.mu.Unlock()
	}()
	if refill {
		g.wakeDetached(ctx, queue, resources[0])
	}
	opts.Wait = r.Wait
	if l, err = g.locker.With(opts); err != nil {
		return nil, err
	}
	lease, err = l.Acquire(ctx, resources...)
	_, busy := errors.AsType[*lock.BusyError](err)
	g.mu.Lock()
	switch {
	case busy:
		g.stalled.add(slot, g.parkedTTL())
	case err == nil:
		delete(g.stalled, slot)
	}
	g.mu.Unlock()
	return lease, err
}

// wakeDetached wakes the first task parked on r in queue from a goroutine
// that Shutdown waits for.
func (g *Guard) wakeDetached(ctx context.Context, queue string, r lock.Resource) {
	g.inflight.Add(1)
	go func() {
		defer g.inflight.Done()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if len(g.wake(wctx, taskRef{}, []string{queue}, []lock.Resource{r}, false)) > 0 {
			g.mu.Lock()
			delete(g.parked, r.String())
			g.mu.Unlock()
		}
	}()
}

// noteParked records that this process parked a task on r.
func (g *Guard) noteParked(r lock.Resource) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.parked.add(r.String(), g.parkedTTL())
}

// noted is a set of keys with when each was last noted, for Guard.parked
// and Guard.stalled.
type noted map[string]time.Time

// maxNoted bounds a noted set: past it, entries older than their
// lifetime are dropped, and a new key is not noted until there is room
// (its slots then work as for a key never noted).
const maxNoted = 4096

func (n noted) add(key string, lifetime time.Duration) {
	now := time.Now()
	if len(n) >= maxNoted {
		for k, at := range n {
			if now.Sub(at) >= lifetime {
				delete(n, k)
			}
		}
	}
	if _, ok := n[key]; ok || len(n) < maxNoted {
		n[key] = now
	}
}

// releaseTimeout bounds a release and the wake-up that follows it.
const releaseTimeout = 5 * time.Second

// release gives the lease back on a context detached from the task's, so a
// cancelled or timed-out task still releases, wakes the next parked task,
// then runs the after-release work.
func (g *Guard) release(ctx context.Context, t *asynq.Task, self taskRef, lease *lock.Lease, after *afterRelease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	switch err := releaseRetrying(ctx, lease); {
	case errors.Is(err, lock.ErrNotHeld):
		g.log.WarnContext(ctx, "lock was already gone at release: its TTL is too tight for this task",
			slog.String("task_type", t.Type()), slog.Duration("held", time.Since(lease.AcquiredAt())))
		// It expired unnoticed by the parked tasks: wake them as a
		// release would.
		g.wake(ctx, self, g.cfg.Queues, lease.Resources(), true)
	case err != nil:
		// Parked tasks retry when the lock would have expired.
		g.log.ErrorContext(ctx, "release lock; it expires with its TTL once Redis stops answering its refreshes too",
			slog.String("task_type", t.Type()), slog.Any("error", err))
	default:
		// Only a resource that a parked task marked wanted has a list to
		// wake, in its queues and in every queue a task parked on it from.
		// The mark stays while tasks remain parked, so each release wakes
		// the next; the release that finds every list empty clears it.
		if wanted := lease.Wanted(); len(wanted) > 0 {
			for _, r := range g.wake(ctx, self, g.cfg.Queues, wanted, true) {
				if err := lease.ClearWanted(ctx, r); err != nil {
					g.log.WarnContext(ctx, "clear wanted mark", slog.String("task_type", t.Type()), slog.Any("error", err))
				}
			}
		}
	}
	after.run(ctx)
}

// releaseRetrying releases lease, trying again until ctx ends after an
// error that is not ErrNotHeld: a lease whose release fails keeps
// refreshing, as a holder that has not released expects, so a release cut
// off by a brief fault (a connection reset) and not retried would keep
// the resource from the next task until MaxHold.
func releaseRetrying(ctx context.Context, lease *lock.Lease) error {
	err := lease.Release(ctx)
	for wait := 50 * time.Millisecond; err != nil && !errors.Is(err, lock.ErrNotHeld); wait = min(2*wait, time.Second) {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		err = lease.Release(ctx)
	}
	return err
}

// ErrShutdown turns a task away from a guard that is shutting down.
var ErrShutdown = errors.New("worker shutting down")

// Shutdown stops taking guarded tasks and waits, until ctx ends, for the
// guarded handlers still running, so that their leases are released
// before the Redis clients close. Call it after asynq.Server.Shutdown,
// which cancels the contexts of the handlers it gives up on.
func (g *Guard) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		g.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("middleware: guarded handlers still running: %w", context.Cause(ctx))
	}
}

// PayloadError reports a payload that cannot be decoded or is invalid. The
// guard archives its task without retrying and without taking a lock.
type PayloadError struct {
	Field   string
	Problem string
}

func (e *PayloadError) Error() string { return "field " + e.Field + ": " + e.Problem }

// recent remembers the first resources of the last tasks to enter the
// guard, "" for tasks it does not guard, and how often each occurs.
type recent struct {
	ring   []string
	next   int
	filled int // entries used so far, up to len(ring)
	counts map[string]int
}

func newRecent(n int) recent {
	return recent{ring: make([]string, max(n, 1)), counts: make(map[string]int)}
}

func (r *recent) add(key string) {
	if old := r.ring[r.next]; old != "" {
		if r.counts[old]--; r.counts[old] == 0 {
			delete(r.counts, old)
		}
	}
	r.ring[r.next] = key
	r.filled = max(r.filled, r.next+1)
	if key != "" {
		r.counts[key]++
	}
	r.next = (r.next + 1) % len(r.ring)
}
