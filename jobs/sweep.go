package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// sweepBatch bounds the orders one sweep reads from the ledger.
const sweepBatch = 1000

// SweepRevokes schedules again the revoke of every order still reserved
// more than grace after its payment window closed, and returns how many it
// scheduled. A checkout schedules the revoke in the queue's Redis before
// it commits the order in the ledger's; where those are different masters
// (Cluster) or a failover loses the queue's last writes, the task can be
// lost while the order stays, its tickets held for good. A revoke task
// that still exists, pending, retrying or archived, is left alone (its
// task ID conflicts) and its order looked at again a grace later, so that
// such orders never fill a sweep's batch.
func (s *Service) SweepRevokes(ctx context.Context, grace time.Duration) (int, error) {
	due, err := s.Store.DueRevokes(ctx, time.Now().Add(-grace), sweepBatch)
	if err != nil {
		return 0, fmt.Errorf("jobs: sweep revokes: %w", err)
	}
	n := 0
	for _, id := range due {
		task, err := NewTask(ctx, RevokeArgs{OrderID: id})
		if err == nil {
			_, err = s.Client.EnqueueContext(ctx, task)
		}
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			err = s.Store.PostponeRevoke(ctx, id, time.Now().Add(max(grace, time.Minute)))
			if err != nil {
				return n, fmt.Errorf("jobs: sweep revokes: %w", err)
			}
			continue
		}
		switch {
		case err != nil:
			return n, fmt.Errorf("jobs: sweep revokes: order %s: %w", id, err)
		default:
			n++
			s.log().WarnContext(ctx, "sweep: an order's revoke was missing; scheduled it again", slog.String("order_id", id))
		}
	}
	return n, nil
}

// SweepRevokesEvery runs SweepRevokes every period until ctx ends,
// logging what fails; a worker runs it beside its jobs.
func (s *Service) SweepRevokesEvery(ctx context.Context, period, grace time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := s.SweepRevokes(ctx, grace); err != nil && ctx.Err() == nil {
			s.log().WarnContext(ctx, "sweep revokes; the next sweep retries", slog.Any("error", err))
		}
	}
}
