package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
)

// A demo run on the user's Redis (-redis-url) writes under a run ID of its
// own: its ledger under demoPrefix, and its order and ticket type IDs,
// hence its task IDs, lock keys and parked lists, start with the run ID.
// So a second run never meets the first one's scheduled revokes, and what
// a run wrote can be found again and removed when it ends, and only that:
// the user's Redis may hold other data, so nothing is flushed, and the
// asynq queues, shared with whatever else uses them, stay with their
// counters.

// newRunID returns a fresh run ID: 8 random lowercase letters and digits,
// a valid start of an order or ticket type ID and no glob pattern.
func newRunID() string { return strings.ToLower(rand.Text()[:8]) }

// demoPrefix starts the keys of a run's ledger (and of its gateway's
// books, which live apart, in memory).
func demoPrefix(runID string) string { return "turnstile:demo:" + runID + ":" }

// runPatterns match every key a run writes beside its asynq tasks: its
// ledger; the lock, fencing counter, waiter queue and wanted mark of each
// of its orders and ticket types (lock.Key escapes ':' but not '-', so
// "order:<run>-o-0001" shows as it is); the lists of tasks parked on them
// and the sets naming those lists' queues (middleware/park.go).
func runPatterns(runID string) []string {
	return []string{
		demoPrefix(runID) + "*",
		lock.DefaultPrefix + "{*:" + runID + "-*",
		"asynq:*turnstile:parked:*" + runID + "-*",
	}
}

// cleanupSummary says what became of a run's keys and tasks.
type cleanupSummary struct {
	RunID string `json:"run_id"`
	// Embedded: the run's Redis went with the process; nothing to remove.
	Embedded bool `json:"embedded"`
	// Kept: -keep left the run's keys and tasks in Redis; Patterns find
	// the keys, and the run ID is in each task's ID.
	Kept bool `json:"kept"`
	// AfterServe: -serve keeps the admin pages up; the run's keys and
	// tasks go when they stop, and the removal is reported then.
	AfterServe bool     `json:"after_serve,omitempty"`
	Patterns   []string `json:"patterns,omitempty"`
	Keys       int      `json:"keys_removed"`
	Tasks      int      `json:"tasks_removed"`
	Error      string   `json:"error,omitempty"`
}

// cleanupTimeout bounds the removal, which also runs after an interrupt.
const cleanupTimeout = time.Minute

// cleanup removes what the run wrote to rdb, once: its tasks through the
// Inspector (so that no queue keeps the ID of a deleted task), then its
// keys by SCAN. The worker must be stopped: a running one would write
// again. It rides out Redis errors as the load does. With keep or on the
// embedded Redis it removes nothing and says so.
func (l *demoLoad) cleanup(ctx context.Context, rdb redis.UniversalClient, embedded, keep bool) cleanupSummary {
	l.cleanupOnce.Do(func() {
		s := cleanupSummary{RunID: l.runID, Embedded: embedded, Kept: keep && !embedded}
		if s.Kept {
			s.Patterns = runPatterns(l.runID)
		}
		if l.runID == "" {
			s.Error = "no run ID: nothing can be told apart to remove"
		} else if !embedded && !keep {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			var errs []error
			var err error
			s.Tasks, err = l.removeTasks(ctx)
			errs = append(errs, err)
			for _, p := range runPatterns(l.runID) {
				n, err := l.removeKeys(ctx, rdb, p)
				s.Keys += n
				errs = append(errs, err)
			}
			if err := errors.Join(errs...); err != nil {
				s.Error = err.Error()
			}
		}
		l.cleaned = s
	})
	return l.cleaned
}

// cleanupAfter is cleanup at the end of demo, deferred: for a run that
// ended early it reports a failure to w, where the summary cannot; say
// reports all of it (a summary that -serve printed before the removal).
func (l *demoLoad) cleanupAfter(ctx context.Context, w io.Writer, rdb redis.UniversalClient, embedded, keep, say bool) {
	s := l.cleanup(ctx, rdb, embedded, keep)
	if say {
		s.print(w)
	} else if s.Error != "" {
		fmt.Fprintf(w, "demo: removing run %s's keys and tasks: %s\n", s.RunID, s.Error)
	}
}

// taskStates are the states a task can be deleted in.
var taskStates = []struct {
	name string
	list func(*asynq.Inspector, string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)
}{
	{"pending", (*asynq.Inspector).ListPendingTasks},
	{"scheduled", (*asynq.Inspector).ListScheduledTasks},
	{"retry", (*asynq.Inspector).ListRetryTasks},
	{"archived", (*asynq.Inspector).ListArchivedTasks},
}

// runTasks lists the run's tasks of one state in queue: those whose ID
// holds the run ID. A queue that does not exist has none.
func (l *demoLoad) runTasks(ctx context.Context, queue string, list func(*asynq.Inspector, string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)) ([]*asynq.TaskInfo, error) {
	const size = 1000
	var mine []*asynq.TaskInfo
	for page := 1; ; page++ {
		var got []*asynq.TaskInfo
		err := l.retry(ctx, func() (err error) {
			got, err = list(l.inspect, queue, asynq.Page(page), asynq.PageSize(size))
			return err
		}, func(err error) bool { return errors.Is(err, asynq.ErrQueueNotFound) })
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, nil
		}
		if err != nil {
			return mine, err
		}
		for _, t := range got {
			if l.ownsTask(t.ID) {
				mine = append(mine, t)
			}
		}
		if len(got) < size {
			return mine, nil
		}
	}
}

// ownsTask tells whether a task ID is of this run: each of the jobs' task
// IDs is "<kind>:" and then an ID the run made. Without a run ID every
// task is (a test's load on a Redis of its own).
func (l *demoLoad) ownsTask(id string) bool {
	if l.runID == "" {
		return true
	}
	_, rest, ok := strings.Cut(id, ":")
	return ok && strings.HasPrefix(rest, l.runID+"-")
}

// removeTasks deletes the run's tasks from the demo's queues and returns
// how many it deleted.
func (l *demoLoad) removeTasks(ctx context.Context) (int, error) {
	n := 0
	var errs []error
	for _, q := range demoQueues {
		for _, st := range taskStates {
			tasks, err := l.runTasks(ctx, q, st.list)
			errs = append(errs, err)
			for _, t := range tasks {
				err := l.retry(ctx, func() error { return l.inspect.DeleteTask(q, t.ID) }, func(err error) bool {
					return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
				})
				switch {
				case err == nil:
					n++
				case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
					errs = append(errs, fmt.Errorf("delete %s task %s: %w", st.name, t.ID, err))
				}
			}
		}
	}
	return n, errors.Join(errs...)
}

// removeKeys deletes the keys matching pattern, on every master of a
// cluster, and returns how many it deleted. Keys go one UNLINK each, in
// pipelines: on a cluster one command may not span slots.
func (l *demoLoad) removeKeys(ctx context.Context, rdb redis.UniversalClient, pattern string) (int, error) {
	var (
		mu sync.Mutex
		n  int
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		for {
			var (
				keys []string
				next uint64
			)
			err := l.retry(ctx, func() (err error) {
				keys, next, err = node.Scan(ctx, cursor, pattern, 1000).Result()
				return err
			}, func(error) bool { return false })
			if err != nil {
				return fmt.Errorf("scan %s: %w", pattern, err)
			}
			if len(keys) > 0 {
				var deleted int64
				err := l.retry(ctx, func() error {
					cmds, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
						for _, k := range keys {
							p.Unlink(ctx, k)
						}
						return nil
					})
					deleted = 0
					for _, c := range cmds {
						if c, ok := c.(*redis.IntCmd); ok {
							deleted += c.Val()
						}
					}
					return err
				}, func(error) bool { return false })
				if err != nil {
					return fmt.Errorf("unlink %s: %w", pattern, err)
				}
				mu.Lock()
				n += int(deleted)
				mu.Unlock()
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	} else {
		err = scan(ctx, rdb)
	}
	return n, err
}

// print says what became of the run's keys and tasks; nothing on the
// embedded Redis, which went with the process.
func (s cleanupSummary) print(w io.Writer) {
	switch {
	case s.Embedded:
	case s.AfterServe:
		fmt.Fprintf(w, "cleanup: run %s's keys and tasks are removed when the admin pages stop (-keep leaves them)\n", s.RunID)
		return
	case s.Kept:
		fmt.Fprintf(w, "kept (-keep): run %s's keys and tasks stay in Redis: keys matching %s; tasks whose ID holds %q\n",
			s.RunID, strings.Join(s.Patterns, " "), s.RunID+"-")
	default:
		fmt.Fprintf(w, "cleanup: removed run %s's %d keys and %d tasks from Redis, and nothing else (-keep leaves them)\n", s.RunID, s.Keys, s.Tasks)
	}
	if s.Error != "" {
		fmt.Fprintf(w, "cleanup: INCOMPLETE: %s\n", s.Error)
	}
}
