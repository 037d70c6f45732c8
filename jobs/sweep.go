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

// outboxGrace is the least time SweepEvery leaves a notification to the
// job that committed it: the job delivers after its release, within
// deliverTimeout, and twice that also covers the release and some skew
// between the committing worker's clock and the sweeper's. Racing that
// delivery would be harmless (each notification is sent once, whoever
// sends it), but would log a warning for an order nothing went wrong with.
const outboxGrace = 2 * deliverTimeout

// SweepOutbox delivers the notifications of every order left undelivered
// for more than grace since the commit that recorded them, and returns
// how many it sent. A job delivers its notifications after its locks are
// released and retries for deliverTimeout; a worker killed, paused or cut
// off in between leaves them pending, until the next job on the order if
// nothing swept. Each one is still sent once: Deliver sends only what is
// pending and takes off what it sends in one step, so a sweep that races
// the job's own late delivery, or another worker's sweep, sends nothing
// twice, and it never sends ahead of a commit. A grace shorter than a
// delivery's own takes over deliveries in progress, which costs only a
// warning each.
func (s *Service) SweepOutbox(ctx context.Context, grace time.Duration) (int, error) {
	orders, err := s.Store.Undelivered(ctx, time.Now().Add(-grace), sweepBatch)
	if err != nil {
		return 0, fmt.Errorf("jobs: sweep outbox: %w", err)
	}
	sent := 0
	for _, id := range orders {
		n, err := s.Store.Deliver(ctx, id)
		if err != nil {
			return sent, fmt.Errorf("jobs: sweep outbox: order %s: %w", id, err)
		}
		if n > 0 {
			// Zero: the job's own delivery got there first.
			s.log().WarnContext(ctx, "sweep: an order's notifications were left undelivered; delivered them",
				slog.String("order_id", id), slog.Int("sent", n))
		}
		sent += n
	}
	return sent, nil
}

// Sweep runs both sweeps once, the second even when the first fails:
// SweepRevokes with grace, and SweepOutbox with grace but never less than
// a job's own delivery takes.
func (s *Service) Sweep(ctx context.Context, grace time.Duration) error {
	_, revokes := s.SweepRevokes(ctx, grace)
	_, outbox := s.SweepOutbox(ctx, max(grace, outboxGrace))
	return errors.Join(revokes, outbox)
}

// SweepEvery runs Sweep every period until ctx ends, logging what fails;
// a worker runs it beside its jobs. Every worker of a shop may run it:
// two sweeps of one order schedule one revoke (its task ID) and send each
// notification once.
func (s *Service) SweepEvery(ctx context.Context, period, grace time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := s.Sweep(ctx, grace); err != nil && ctx.Err() == nil {
			s.log().WarnContext(ctx, "sweep; the next sweep retries", slog.Any("error", err))
		}
	}
}
