package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
)

// The scripts below work on asynq v0.26's own keys (internal/rdb), which all
// share the queue's hash tag, so our per-key parked list lives under the
// same tag: one script can touch both on Redis Cluster. A test runs them
// against the pinned asynq.
func taskKeyPrefix(queue string) string { return "asynq:{" + queue + "}:t:" }
func retryKey(queue string) string      { return "asynq:{" + queue + "}:retry" }
func pendingKey(queue string) string    { return "asynq:{" + queue + "}:pending" }

func parkedKey(queue string, r lock.Resource) string {
	return "asynq:{" + queue + "}:turnstile:parked:" + r.String()
}

// parkedQueuesKey names the set of queues with tasks parked on r. A release
// reads it to find the lists to wake, since the releasing worker may serve
// none of those queues (payment:confirm in critical releasing an order a
// revoke in default waits for). It lives under r's own hash tag, apart
// from the lists, so each script touches one slot; nothing needs the two
// atomically (see Guard.park).
func parkedQueuesKey(r lock.Resource) string {
	return "asynq:turnstile:parked:{" + r.String() + "}:queues"
}

// maxParked caps a parked list. A task that finds its list full is not
// parked: it retries after its busy delay like any busy task, a holder's
// TTL later. The cap bounds the list's memory and the O(n) LREM of each
// park; it must stay above the backlog of a hot key, since every task
// past it waits a whole TTL (workerbench's 2,000-task flash sale sold
// 156/s with a cap of 1,000 against 499/s with 10,000).
const maxParked = 10000

// parkedTTL is how long a parked list, and the set naming its queue,
// outlive the last task parked in it. An entry is useful only while its
// task waits in the retry set, at most the safety net; after that the
// task retried by itself, and its ID, if left behind, is stale.
func (g *Guard) parkedTTL() time.Duration { return g.cfg.SafetyNet + time.Minute }

// parkScript counts a busy round on the task's hash and puts its ID at the
// tail of the resource's parked list, once, or, when the task has been
// busy too often or too long, clears its count and does not park it: it
// is archived, and a re-run starts afresh. Only consecutive busy rounds
// count: a round whose asynq retry count differs from the last round's
// follows a failed run, and starts the count over.
//
//	KEYS[1] -> parked list  KEYS[2] -> asynq:{q}:t:<id>
//	ARGV[1] -> task ID  ARGV[2] -> now, unix ms  ARGV[3] -> asynq retry count
//	ARGV[4] -> max busy rounds  ARGV[5] -> busy deadline ms
//	ARGV[6] -> list TTL ms  ARGV[7] -> list cap
//
// Returns {busy rounds so far, unix ms of the first, verdict}: verdict 0
// means give up, 1 not parked (the list is full, or the task is gone), 2
// parked. A task whose hash is gone (a Redis restart lost it, or someone
// deleted it while it ran) is not counted: a count would make a hash of
// turnstile's fields alone, which asynq's Inspector then fails to read
// and nothing ever deletes.
var parkScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, tonumber(ARGV[2]), 1} end
local since = redis.call('HGET', KEYS[2], 'turnstile_busy_since')
local n
if since and redis.call('HGET', KEYS[2], 'turnstile_busy_retried') == ARGV[3] then
  n = redis.call('HINCRBY', KEYS[2], 'turnstile_busy', 1)
  since = tonumber(since)
else
  n = 1
  since = tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], 'turnstile_busy', 1, 'turnstile_busy_since', ARGV[2], 'turnstile_busy_retried', ARGV[3])
end
redis.call('LREM', KEYS[1], 0, ARGV[1])
if n >= tonumber(ARGV[4]) or tonumber(ARGV[2]) - since >= tonumber(ARGV[5]) then
  redis.call('HDEL', KEYS[2], 'turnstile_busy', 'turnstile_busy_since', 'turnstile_busy_retried')
  return {n, since, 0}
end
local verdict = 1
if redis.call('LLEN', KEYS[1]) < tonumber(ARGV[7]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  verdict = 2
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {n, since, verdict}
`)

// forgetBusyScript clears a task's busy count after a run that failed: its
// next busy round is its first.
//
//	KEYS[1] -> asynq:{q}:t:<id>
var forgetBusyScript = redis.NewScript(`
return redis.call('HDEL', KEYS[1], 'turnstile_busy', 'turnstile_busy_since', 'turnstile_busy_retried')
`)

// parkedInScript adds a queue to the set of queues with tasks parked on a
// resource and renews the set's TTL.
//
//	KEYS[1] -> parked queues set
//	ARGV[1] -> queue  ARGV[2] -> TTL ms
var parkedInScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// parkedQueuesScript lists the queues with tasks parked on a resource. A
// script rather than SMEMBERS so that it batches with the wake-ups.
//
//	KEYS[1] -> parked queues set
var parkedQueuesScript = redis.NewScript(`
return redis.call('SMEMBERS', KEYS[1])
`)

// wakeScript moves the first parked task that waits in the retry set to
// the head of the pending list, as asynq's own requeue does, so the next
// worker to dequeue runs it. Entries of tasks that are gone are dropped
// as the scan meets them, and so is the entry of the releasing task, which
// may have run on its own retry and left its ID behind (still active, it
// would otherwise keep its place); one further back is dropped when a
// later wake-up meets it, by then no longer active. Nothing scans the whole
// list, so a wake-up costs the same however many tasks are parked. Tasks
// still active (they returned busy an instant ago and asynq has not yet
// moved them to the retry set) keep their places at the head, and the scan
// goes on past them, up to a bound, and the list keeps its TTL.
//
//	KEYS[1] -> parked list  KEYS[2] -> retry set  KEYS[3] -> pending list
//	ARGV[1] -> task key prefix  ARGV[2] -> releasing task's ID, or ""
//
// Returns 1 when it woke a task, 0 when none was parked, and 2 when only
// active tasks were: the caller tries again shortly.
var wakeScript = redis.NewScript(`
local ttl = redis.call('PTTL', KEYS[1])
local active = {}
local woke = 0
while #active < 32 do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  if id == ARGV[2] then
    -- the releasing task's own stale entry: drop it
  elseif redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('RPUSH', KEYS[3], id)
    redis.call('HSET', ARGV[1] .. id, 'state', 'pending')
    woke = 1
    break
  end
  if redis.call('HGET', ARGV[1] .. id, 'state') == 'active' then
    active[#active + 1] = id
  end
end
for i = #active, 1, -1 do
  redis.call('LPUSH', KEYS[1], active[i])
end
if #active > 0 and ttl > 0 then
  -- the scan may have emptied the list, which took its TTL with it
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if woke == 1 then return 1 end
if #active > 0 then return 2 end
return 0
`)

// ErrBusy marks a task that found its resources held and was parked. It
// is flow control, not failure: IsFailure says so, and since it wraps
// lock.ErrNotAcquired, so does telemetry.IsFlowControl.
var ErrBusy = fmt.Errorf("resource busy: %w", lock.ErrNotAcquired)

// ErrLeaseLost is the cause of a handler's context cancellation when its
// lease can no longer be proven: the lock may already be someone else's.
var ErrLeaseLost = errors.New("lease lost")

// IsFailure is asynq.Config.IsFailure for a guarded worker: a busy round,
// or a task turned away by a worker shutting down, does not use up the
// task's retries.
func IsFailure(err error) bool { return !errors.Is(err, ErrBusy) && !errors.Is(err, ErrShutdown) }

// busyRetryMargin is added to the holder's remaining TTL in a busy task's
// retry delay: asynq stores retry times in whole seconds, rounded down, so
// without it the retry could come up to a second before the lock expires.
const busyRetryMargin = time.Second

// RetryDelay is asynq.Config.RetryDelayFunc for a guarded worker. A busy
// task retries once the holder's lease would have run out (its remaining
// TTL plus a second), or after the safety net if that is sooner: a
// release wakes it earlier, but a holder that crashed or let its lease
// expire releases nothing. One turned away by shutdown is due again at
// once, for another worker; other errors back off as
// GuardConfig.RetryDelay says.
func (g *Guard) RetryDelay(n int, err error, t *asynq.Task) time.Duration {
	switch {
	case errors.Is(err, ErrBusy):
		if busy, ok := errors.AsType[*lock.BusyError](err); ok && busy.TTL > 0 {
			return min(g.cfg.SafetyNet, busy.TTL+busyRetryMargin)
		}
		return g.cfg.SafetyNet
	case errors.Is(err, ErrShutdown):
		return time.Second
	}
	return g.cfg.RetryDelay(n, err, t)
}

// busyRound is the error of a task that found its resources busy: its
// text says what held them, and it carries the lock's BusyError, whose TTL
// RetryDelay reads.
type busyRound struct {
	msg  string
	busy *lock.BusyError
}

func (e *busyRound) Error() string   { return e.msg }
func (e *busyRound) Unwrap() []error { return []error{ErrBusy, e.busy} }

// park records the busy round and parks the task, or archives it when it
// has been busy too often or too long in a row. The returned error is the
// task's last error in asynq: it names the key's kind, the holder and its
// TTL.
//
// A release must find every task parked on the resource, in whatever
// queue: so the task joins its queue's list, then names the queue in the
// resource's set of parked queues, and only then marks the resource
// wanted. A release that reports the mark therefore reads a set that
// names the queue, and a list that holds the task.
func (g *Guard) park(ctx context.Context, r *rule, t *asynq.Task, queue, id string, busy *lock.BusyError) error {
	holder := describe(busy.Owner)
	what := fmt.Sprintf("%s: %s lock busy for %s, held by %s", t.Type(), busy.Resource.Kind(), busy.TTL.Round(time.Millisecond), holder)
	retried, _ := asynq.GetRetryCount(ctx)
	now := time.Now()
	ttl := g.parkedTTL().Milliseconds()
	v, err := g.rdb.Run(ctx, parkScript, []string{parkedKey(queue, busy.Resource), taskKeyPrefix(queue) + id},
		id, now.UnixMilli(), retried, r.MaxBusy, r.BusyDeadline.Milliseconds(), ttl, maxParked).Int64Slice()
	if err != nil {
		// Not parked: the retry delay is the only wake-up left.
		g.log.WarnContext(ctx, "park busy task", slog.String("task_type", t.Type()), slog.Any("error", err))
		g.cfg.Metrics.BusyRetry(ctx, busy.Resource)
		return &busyRound{fmt.Sprintf("%s: %s", what, ErrBusy), busy}
	}
	rounds, since, verdict := v[0], time.UnixMilli(v[1]), v[2]
	if verdict == 0 {
		return fmt.Errorf("%s; busy %d times over %s, giving up: %w", what, rounds, now.Sub(since).Round(time.Second), asynq.SkipRetry)
	}
	if verdict == 2 {
		g.noteParked(busy.Resource)
		if err := g.rdb.Run(ctx, parkedInScript, []string{parkedQueuesKey(busy.Resource)}, queue, ttl).Err(); err != nil {
			// A release in another queue's worker may miss us; our own
			// queue's workers still find the list.
			g.log.WarnContext(ctx, "index parked queue", slog.String("task_type", t.Type()), slog.Any("error", err))
		}
	}
	// Mark the resource wanted, so that its holder's release wakes the
	// list. A release between our failed acquire and the mark found nobody
	// to wake: if the resource is free now, that happened, and we wake the
	// list ourselves (the wake-up waits until asynq has moved us to the
	// retry set).
	if held, err := g.locker.Want(ctx, busy.Resource, g.parkedTTL()); err != nil || !held {
		g.wakeDetached(ctx, queue, busy.Resource)
	}
	g.cfg.Metrics.BusyRetry(ctx, busy.Resource)
	return &busyRound{fmt.Sprintf("%s (busy round %d): %s", what, rounds, ErrBusy), busy}
}

// forgetBusy clears the busy count of a task whose run failed, detached
// from the task's context: its next busy round is its first, however long
// ago the last one was.
func (g *Guard) forgetBusy(ctx context.Context, t *asynq.Task, queue, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := g.rdb.Run(ctx, forgetBusyScript, []string{taskKeyPrefix(queue) + id}).Err(); err != nil {
		g.log.WarnContext(ctx, "clear busy count", slog.String("task_type", t.Type()), slog.Any("error", err))
	}
}

// wakeRetries bounds the re-tries of a wake-up whose head task is still on
// its way to the retry set, spaced from wakeRetryFirst doubling up to
// wakeRetryMax: about 2.5 s in all, since a loaded worker can take a while
// to finish a task.
const (
	wakeRetries    = 30
	wakeRetryFirst = 5 * time.Millisecond
	wakeRetryMax   = 100 * time.Millisecond
)

// taskRef names a task: the releasing one, whose stale entry a wake-up
// drops from its queue's lists. The zero value names none.
type taskRef struct{ queue, id string }

// wake moves the first task parked on each of resources to the head of its
// queue, in each of queues and, when indexed, in each queue the resource's
// set of parked queues names, and returns the resources that surely had
// no task parked in any of them. It runs detached from the task's context.
// The sets are read alongside the first wake-ups in queues, so a release
// whose parked tasks are all in its own queues waits for no extra round
// trip.
func (g *Guard) wake(ctx context.Context, from taskRef, queues []string, resources []lock.Resource, indexed bool) (unwanted []lock.Resource) {
	unwanted = slices.Clone(resources)
	keep := func(r lock.Resource) {
		unwanted = slices.DeleteFunc(unwanted, func(u lock.Resource) bool { return u == r })
	}
	type list struct {
		queue string
		res   lock.Resource
		n     int
		err   error
	}
	var lists []*list
	for _, res := range resources {
		for _, q := range queues {
			lists = append(lists, &list{queue: q, res: res})
		}
	}
	// One goroutine per script, so that they share a flight.
	run := func(ls []*list, also func(*sync.WaitGroup)) {
		var wg sync.WaitGroup
		for _, l := range ls {
			self := ""
			if l.queue == from.queue {
				self = from.id
			}
			wg.Go(func() {
				l.n, l.err = g.rdb.Run(ctx, wakeScript, []string{parkedKey(l.queue, l.res), retryKey(l.queue), pendingKey(l.queue)},
					taskKeyPrefix(l.queue), self).Int()
			})
		}
		if also != nil {
			also(&wg)
		}
		wg.Wait()
	}
	pause := wakeRetryFirst
	for attempt := 0; len(lists) > 0; attempt++ {
		if attempt > 0 {
			if attempt == wakeRetries {
				return unwanted // the retry delay takes over
			}
			select {
			case <-ctx.Done():
				return unwanted
			case <-time.After(pause):
			}
			pause = min(2*pause, wakeRetryMax)
		}
		if attempt > 0 || !indexed {
			run(lists, nil)
		} else {
			sets := make([][]string, len(resources))
			errs := make([]error, len(resources))
			run(lists, func(wg *sync.WaitGroup) {
				for i, res := range resources {
					wg.Go(func() {
						sets[i], errs[i] = g.rdb.Run(ctx, parkedQueuesScript, []string{parkedQueuesKey(res)}).StringSlice()
					})
				}
			})
			var more []*list
			for i, res := range resources {
				if errs[i] != nil {
					// A queue we do not serve may have tasks parked on res:
					// keep its mark, so a later release tries again.
					g.log.WarnContext(ctx, "read parked queues", slog.String("resource", res.String()), slog.Any("error", errs[i]))
					keep(res)
				}
				for _, q := range sets[i] {
					if !slices.Contains(queues, q) {
						more = append(more, &list{queue: q, res: res})
					}
				}
			}
			if len(more) > 0 {
				run(more, nil)
				lists = append(lists, more...)
			}
		}
		later := lists[:0]
		for _, l := range lists {
			if l.err != nil {
				g.log.WarnContext(ctx, "wake parked task", slog.String("queue", l.queue), slog.Any("error", l.err))
			}
			if l.n != 0 || l.err != nil {
				keep(l.res)
			}
			if l.n == 2 {
				later = append(later, l)
			}
		}
		lists = later
	}
	return unwanted
}
