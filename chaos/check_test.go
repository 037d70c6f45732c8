package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// shopQueues are the queues the workers serve (worker.DefaultQueues).
var shopQueues = []string{"critical", "default", "low"}

// idleBound is how long after the load the queues get to become idle. A
// task active in a worker that died, or whose completion a Redis crash
// lost, stays active until asynq's recoverer moves it to retry: its lease
// (30 s from the last heartbeat) must have run out 30 s before a
// recoverer pass, which each worker runs once a minute, and the retry
// then waits asynq's default delay (15-45 s for a first retry, as
// "turnstile worker" sets no other): 30+30+60+45 = 165 s at worst, plus a
// margin for a loaded machine (crash runs took 139-165 s).
const idleBound = 240 * time.Second

// idleCap bounds the wait for a task that already failed before, in a
// restart or a cut connection: asynq's delay grows with each failure
// (n⁴+15+rand(30)·(n+1) s: up to 121 s after a second, 216 s after a
// third), so waitIdle waits past idleBound for a task whose retry is
// scheduled, up to idleCap. A CI run on a loaded machine, where a wipe and
// a crash each took over a second, had one wait 4 min in the retry set.
const idleCap = 8 * time.Minute

// retryRun is how long waitIdle allows a retried task, once due, to be
// dequeued and run (a busy round or two included).
const retryRun = 30 * time.Second

// waitIdle polls until no queue has a pending, active or retry task and
// none scheduled is due, and returns how long that took. It waits up to
// bound, or, while only retries scheduled before then keep the queues
// busy, until the last of them is due and has had retryRun to run.
func waitIdle(ctx context.Context, inspect *asynq.Inspector, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(bound)
	ctx, cancel := context.WithTimeout(ctx, idleCap)
	defer cancel()
	for {
		busy, err := busyTasks(inspect)
		if err == nil && busy.String() == "" {
			return time.Since(start), nil
		}
		if due := busy.lastRetry.Add(retryRun); err == nil && busy.onlyRetries() && due.After(deadline) {
			deadline = due
		}
		if time.Now().After(deadline) {
			return time.Since(start), notIdle(time.Since(start).Round(time.Second), busy, err)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), notIdle(idleCap, busy, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// notIdle says what kept the queues busy for d, and the last error
// reading them, if any.
func notIdle(d time.Duration, b busy, err error) error {
	if err != nil {
		return fmt.Errorf("queues not idle %s after the load: %s: %w", d, b, err)
	}
	return fmt.Errorf("queues not idle %s after the load: %s", d, b)
}

// deliverBound is how long, once the queues are idle, the workers' outbox
// sweep gets to deliver what a worker killed, paused or cut off inside
// its delivery left: its grace (10 s, or the period if longer) after the
// commit, and a period (sweepEvery) more.
const deliverBound = 30 * time.Second

// waitDelivered polls until no order has a notification left to deliver.
func waitDelivered(ctx context.Context, store *ledger.Store) error {
	ctx, cancel := context.WithTimeout(ctx, deliverBound)
	defer cancel()
	for {
		left, err := store.Undelivered(ctx, time.Now(), 10)
		if err == nil && len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("notifications not delivered %s after the queues were idle: orders %v (last error: %w)", deliverBound, left, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// busy is what keeps the queues busy.
type busy struct {
	what      []string
	others    int       // pending, active and due scheduled tasks
	lastRetry time.Time // when the last task in a retry set is due
}

func (b busy) String() string    { return strings.Join(b.what, "; ") }
func (b busy) onlyRetries() bool { return b.others == 0 && !b.lastRetry.IsZero() }

// busyTasks says what keeps the queues busy; its String is "" when they
// are idle.
func busyTasks(inspect *asynq.Inspector) (busy, error) {
	var b busy
	known, err := inspect.Queues()
	if err != nil {
		return busy{what: []string{"queues"}}, err
	}
	for _, q := range shopQueues {
		if !slices.Contains(known, q) {
			continue // nothing was ever enqueued to it
		}
		info, err := inspect.GetQueueInfo(q)
		if err != nil {
			return busy{what: []string{q}}, err
		}
		if n := info.Pending + info.Active + info.Retry; n > 0 {
			b.what = append(b.what, fmt.Sprintf("%s: %d pending, %d active, %d retry", q, info.Pending, info.Active, info.Retry))
		}
		b.others += info.Pending + info.Active
		if info.Retry > 0 {
			// The last due comes last; the first three say why they wait.
			last, err := inspect.ListRetryTasks(q, asynq.PageSize(1), asynq.Page(info.Retry))
			if err != nil {
				return busy{what: []string{q}}, err
			}
			if len(last) > 0 && last[0].NextProcessAt.After(b.lastRetry) {
				b.lastRetry = last[0].NextProcessAt
			}
			first, err := inspect.ListRetryTasks(q, asynq.PageSize(3))
			if err != nil {
				return busy{what: []string{q}}, err
			}
			for _, ti := range first {
				b.what = append(b.what, fmt.Sprintf("%s: %s retry %d/%d at %s after %q", q, ti.ID, ti.Retried, ti.MaxRetry, ti.NextProcessAt.Format(stamp), ti.LastErr))
			}
		}
		// The earliest scheduled task comes first.
		sched, err := inspect.ListScheduledTasks(q, asynq.PageSize(1))
		if err != nil {
			return busy{what: []string{q}}, err
		}
		if len(sched) > 0 && sched[0].NextProcessAt.Before(time.Now()) {
			b.what = append(b.what, fmt.Sprintf("%s: scheduled %s due since %s", q, sched[0].ID, sched[0].NextProcessAt.Format(time.RFC3339)))
			b.others++
		}
	}
	return b, nil
}

// stamp formats the wall-clock times the suite logs, as the faults do.
const stamp = "15:04:05.000"

// taskOutcome is how the load's tasks ended.
type taskOutcome struct {
	completed, archived int
	completedAt         []time.Time // of retained tasks, whole seconds (asynq's resolution)
	completedOn         map[string][]time.Time
	lost                []string // neither completed nor archived with a reason
	// lostWithRedis counts tasks gone whose enqueue returned within a
	// loss window: Redis lost them with the window's writes.
	lostWithRedis int
}

// A lossWindow is when a Redis restart may have lost acknowledged writes:
// those acknowledged from from to to, when the server was back (a crash
// that cut the last second of the append-only file; a wipe: everything
// before it).
type lossWindow struct{ from, to time.Time }

func (w lossWindow) holds(t time.Time) bool { return !t.Before(w.from) && !t.After(w.to) }

// checkTasks finds every task the load enqueued: each must have completed
// (a retained one is there as completed; a revoke, not retained, is gone,
// which only completion does) or be archived with a reason. A retained
// task enqueued within one of losses may be gone instead: counted apart.
func checkTasks(inspect *asynq.Inspector, refs []taskRef, losses ...lossWindow) taskOutcome {
	out := taskOutcome{completedOn: map[string][]time.Time{}}
	for _, ref := range refs {
		info, err := inspect.GetTaskInfo(ref.queue, ref.id)
		gone := errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
		inLoss := slices.ContainsFunc(losses, func(w lossWindow) bool { return w.holds(ref.at) })
		switch {
		case gone && inLoss:
			// Lost, or for a task not retained possibly completed first:
			// counted apart either way.
			out.lostWithRedis++
		case err == nil && info.State == asynq.TaskStateScheduled && inLoss:
			// A revoke the load ran now in writes Redis lost: it is back
			// on its schedule, the end of the payment window, where it
			// runs. Counted apart too.
			out.lostWithRedis++
		case errors.Is(err, asynq.ErrTaskNotFound) && !ref.retained:
			out.completed++
		case err != nil:
			out.lost = append(out.lost, fmt.Sprintf("%s %s enqueued at %s: %v", ref.queue, ref.id, ref.at.Format(stamp), err))
		case info.State == asynq.TaskStateCompleted:
			out.completed++
			out.completedAt = append(out.completedAt, info.CompletedAt)
			out.completedOn["order:"+ref.orderID] = append(out.completedOn["order:"+ref.orderID], info.CompletedAt)
		case info.State == asynq.TaskStateArchived && info.LastErr != "":
			out.archived++
		default:
			out.lost = append(out.lost, fmt.Sprintf("%s %s enqueued at %s: %s (last error %q)", ref.queue, ref.id, ref.at.Format(stamp), info.State, info.LastErr))
		}
	}
	return out
}

// logCounts are what the workers' JSON logs say about fencing.
type logCounts struct {
	refused   int // jobs whose fenced commit or read the ledger refused
	leaseLost int // handlers cancelled because their lease was lost
}

// countLogs reads every worker log: a job refused by a fence fails with
// an error wrapping ledger.ErrStaleFence, which the worker logs as "task
// failed" with the error's text.
func countLogs(files []string) (logCounts, error) {
	var c logCounts
	for _, path := range files {
		f, err := os.Open(path) //nolint:gosec // G304: a worker log this test wrote in its temp dir
		if err != nil {
			return c, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var rec struct {
				Msg   string `json:"msg"`
				Error string `json:"error"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue // a line that is not a record, such as a panic's
			}
			switch {
			case rec.Msg == "task failed" && strings.Contains(rec.Error, "stale fencing token"):
				c.refused++
			case strings.HasPrefix(rec.Msg, "lease lost while the handler runs"):
				c.leaseLost++
			}
		}
		err = errors.Join(sc.Err(), f.Close())
		if err != nil {
			return c, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return c, nil
}

// leftoverPatterns are the lock keys (lock, waiter queue, wanted mark; fence
// counters are kept for good) and the parked lists and their index sets,
// which must be gone once the queues are idle and the TTLs have run out.
var leftoverPatterns = []string{"turnstile:lock:*", "asynq:*turnstile:parked*"}

// parkedIndexTTL is the longest a parked-queues index set, a parked
// list, or the wanted mark its tasks put on a busy lock, may outlive its
// last parked task: middleware's parked TTL, its safety net (5 min) plus
// a minute.
const parkedIndexTTL = 6 * time.Minute

// leftovers waits up to a lock TTL and a margin for the lock keys and
// parked lists to go, and returns those that stay, with their TTLs. A
// parked-queues index set, parked list or wanted mark with a TTL within
// parkedIndexTTL is counted in indexes instead: it is bounded by design.
func leftovers(ctx context.Context, rdb *redis.Client) (left []string, indexes int, err error) {
	deadline := time.Now().Add(shopLockTTL + 2*time.Second)
	for {
		left, indexes = nil, 0
		for _, pattern := range leftoverPatterns {
			iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
			for iter.Next(ctx) {
				k := iter.Val()
				if strings.HasSuffix(k, ":fence") {
					continue
				}
				ttl := rdb.PTTL(ctx, k).Val()
				// An index, or a list whose tasks are gone (a SIGKILLed
				// holder's key that no release wakes again: its entries
				// are dropped by the next wake-up or its TTL), is bounded
				// by design; a list with a task still waiting would also
				// keep the queues busy, which waitIdle would have caught.
				// A wanted mark whose holder died with tasks parked on
				// it has no release left to clear it: it lasts as long as
				// the tasks it was put for (Locker.Want's ttl).
				parked := strings.Contains(k, ":turnstile:parked:") && ttl <= parkedIndexTTL
				wanted := strings.HasPrefix(k, "turnstile:lock:") && strings.HasSuffix(k, ":wanted") && ttl <= parkedIndexTTL
				if ttl > 0 && (parked || wanted) {
					indexes++
					continue
				}
				left = append(left, fmt.Sprintf("%s (ttl %s)", k, ttl))
			}
			if err := iter.Err(); err != nil {
				return nil, 0, err
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			slices.Sort(left)
			return left, indexes, nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
