package middleware

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
)

// ArchiveUnknown archives a task of a type this worker has no handler
// for, with a reason that says so, instead of letting asynq retry it with
// backoff for days. An operator can run it again from the archive once a
// worker that knows the type is deployed.
func ArchiveUnknown(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		err := next.ProcessTask(ctx, t)
		if errors.Is(err, asynq.ErrHandlerNotFound) {
			return fmt.Errorf("%w: no handler is registered for it on this worker: %w", err, asynq.SkipRetry)
		}
		return err
	})
}
