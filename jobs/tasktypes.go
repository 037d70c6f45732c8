package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/worker"
)

// lockTTL is tight: a crashed worker blocks an order for seconds. Jobs
// whose gateway call is slow have their lease refreshed by the guard.
const lockTTL = 5 * time.Second

// TaskTypes returns the three jobs as worker task types: payload checks,
// the order lock (unless NoLock), queue, retries and timeout.
func (s *Service) TaskTypes() []worker.TaskType {
	return []worker.TaskType{
		taskType(s, KindConfirm, s.Confirm, func(a ConfirmArgs) string { return a.OrderID }),
		taskType(s, KindRefund, s.Refund, func(a RefundArgs) string { return a.OrderID }),
		taskType(s, KindRevoke, s.Revoke, func(a RevokeArgs) string { return a.OrderID }),
	}
}

func taskType[T Args](s *Service, kind string, handle func(context.Context, T) error, orderID func(T) string) worker.TaskType {
	tt := worker.TaskType{
		Type: kind,
		Handler: asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			a, err := Decode[T](t.Payload())
			if err != nil { // Check has refused it already; this is for other callers
				return fmt.Errorf("%s: bad payload: %w: %w", kind, err, asynq.SkipRetry)
			}
			return handle(ctx, a)
		}),
		Check:    func(payload []byte) error { _, err := Decode[T](payload); return err },
		Queue:    queues[kind],
		MaxRetry: MaxRetry,
		Timeout:  timeouts[kind],
		LockTTL:  lockTTL,
	}
	if !s.NoLock {
		tt.Keys = orderKeys(orderID)
	}
	return tt
}
