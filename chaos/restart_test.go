package chaos

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// restarter restarts the run's redis-server as a fault, the two ways a
// restart loses writes Redis had acknowledged, and keeps what the checks
// must know: when writes may have been lost, and when Redis went down.
type restarter struct {
	srv   *redistest.Process
	rdb   *redis.Client
	store *ledger.Store
	types []ledger.TicketType

	mu       sync.Mutex
	losses   []lossWindow
	restarts []history.Restart
}

// aofPostpone is how long appendfsync everysec may hold back acknowledged
// writes from the file while a background fsync is slow: Redis writes once
// two seconds have passed by its clock of whole seconds (server.unixtime),
// so up to just under three.
const aofPostpone = 3 * time.Second

// crash is a machine crash under appendfsync everysec: the server is
// killed and comes back from an append-only file cut back to what it held
// a second before, so it loses what it acknowledged in that second.
func (r *restarter) crash(ctx context.Context) {
	// Redis writes its AOF buffer to the file before it replies, so a
	// write acknowledged before the size was read is in it, with one
	// exception: while a background fsync is slow, everysec postpones the
	// write for up to aofPostpone and replies all the same. A run on a
	// loaded machine lost a task acknowledged before the size was read,
	// most likely so; the loss window starts that much earlier.
	from := time.Now().Add(-aofPostpone)
	synced := r.srv.AOFSize()
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Second):
	}
	down := time.Now()
	r.srv.CrashTo(synced) //nolint:contextcheck // the server is the test's, bound to its t, not to a run's context
	// The window ends when the server is back, not when the kill was
	// asked for: a write the old process acknowledged in between is lost
	// too (CI seed 20 lost a refund acknowledged 106 ms after down).
	up := time.Now()
	r.note(lossWindow{from: from, to: up}, history.Restart{Down: down, Up: up})
}

// wipe is a restart without persistence: the server comes back empty. An
// operator then restocks the catalogue (AddTicketType: full capacity
// again), so the shop goes on; orders and tasks from before are gone.
func (r *restarter) wipe(ctx context.Context) error {
	down := time.Now()
	r.srv.Wipe() //nolint:contextcheck // the server is the test's, bound to its t, not to a run's context
	up := time.Now()
	r.note(lossWindow{to: up}, history.Restart{Down: down, Up: up})
	for _, tt := range r.types {
		if err := retry(ctx, func() error { return r.store.AddTicketType(ctx, tt) }, func(error) bool { return false }); err != nil {
			return fmt.Errorf("chaos: restock %s after a wipe: %w", tt.ID, err)
		}
	}
	// asynq registers a queue (asynq:queues) at a client's first enqueue
	// to it, and never again: after a wipe the workers still run the
	// queues' tasks, but an Inspector (asynqmon, the checks here) finds
	// no queue until a new client enqueues. The operator registers them.
	if err := retry(ctx, func() error { return r.rdb.SAdd(ctx, "asynq:queues", shopQueues).Err() }, func(error) bool { return false }); err != nil {
		return fmt.Errorf("chaos: register the queues after a wipe: %w", err)
	}
	return nil
}

func (r *restarter) note(w lossWindow, rs history.Restart) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losses = append(r.losses, w)
	r.restarts = append(r.restarts, rs)
}

// windows returns the loss windows and the restarts so far.
func (r *restarter) windows() ([]lossWindow, []history.Restart) {
	if r == nil {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.losses), slices.Clone(r.restarts)
}

// fencesGoBack returns, per resource, the tokens first used after a
// restart that are not above every token used before it: a lock whose
// fence counter went back with the lost writes and handed out a fence
// again. The lock seeds a fence from the server's clock (µs) when that is
// ahead of its counter, so a counter that lost a second's bumps restarts
// above every fence it gave. A token used after the restart and before it
// is an old holder's, not a new fence, and is left out.
func fencesGoBack(records []history.Record, restarts []history.Restart) []string {
	var bad []string
	for _, rs := range restarts {
		down, at, up := rs.Down, rs.Down.UnixNano(), max(rs.Up.UnixNano(), rs.Down.UnixNano())
		before, after := map[string]int64{}, map[string][]int64{}
		seen := map[string]map[int64]bool{}
		for _, rec := range records {
			if seen[rec.Resource] == nil {
				seen[rec.Resource] = map[int64]bool{}
			}
			if rec.Start < at {
				before[rec.Resource] = max(before[rec.Resource], rec.Token)
				seen[rec.Resource][rec.Token] = true
			}
		}
		for _, rec := range records {
			if rec.Start > up && !seen[rec.Resource][rec.Token] {
				after[rec.Resource] = append(after[rec.Resource], rec.Token)
			}
		}
		for res, tokens := range after {
			if low := slices.Min(tokens); low <= before[res] {
				bad = append(bad, fmt.Sprintf("%s: fence %d after the restart at %s, %d before it", res, low, down.Format(stamp), before[res]))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func TestFencesGoBack(t *testing.T) {
	t.Parallel()
	down := time.Unix(100, 0)
	rec := func(res string, token int64, sec int64) history.Record {
		return history.Record{Resource: res, Token: token, Start: time.Unix(sec, 0).UnixNano()}
	}
	records := []history.Record{
		rec("order:a", 500, 90), rec("order:a", 500, 110), // an old holder after the restart
		rec("order:a", 900, 120),                          // a new fence, above
		rec("order:b", 700, 95), rec("order:b", 650, 105), // a new fence, below: handed out again
		rec("order:c", 10, 130), // nothing before
	}
	require.Equal(t, []string{"order:b: fence 650 after the restart at " + down.Format(stamp) + ", 700 before it"},
		fencesGoBack(records, []history.Restart{{Down: down, Up: down.Add(time.Second)}}))
	require.Empty(t, fencesGoBack(records, nil))
}
