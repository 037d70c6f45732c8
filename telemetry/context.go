package telemetry

import (
	"context"
	"errors"

	"github.com/turnstilehq/turnstile/lock"
)

type taskTypeKey struct{}

// noTaskType labels metrics recorded outside a task, such as a lock taken
// by the admin server, so that the label is never empty.
const noTaskType = "none"

// WithTaskType returns a copy of ctx that carries the asynq task type, so
// that code below the tracing middleware (the lock observer) can label its
// metrics with it without knowing about asynq.
func WithTaskType(ctx context.Context, taskType string) context.Context {
	return context.WithValue(ctx, taskTypeKey{}, taskType)
}

// TaskType returns the task type stored by WithTaskType, or "" if none.
func TaskType(ctx context.Context) string {
	s, _ := ctx.Value(taskTypeKey{}).(string)
	return s
}

// taskTypeLabel is TaskType with a non-empty fallback for metric labels.
func taskTypeLabel(ctx context.Context) string {
	if s := TaskType(ctx); s != "" {
		return s
	}
	return noTaskType
}

// IsFlowControl reports whether err only says "not now": a lock held by
// another owner (lock.ErrNotAcquired, including *lock.BusyError). Such an
// error gives the slot back to the queue; spans leave their status unset
// for it and metrics count it as OutcomeBusy rather than OutcomeError.
func IsFlowControl(err error) bool {
	return errors.Is(err, lock.ErrNotAcquired)
}

// Outcome classifies a task handler's error as OutcomeSuccess, OutcomeBusy
// (IsFlowControl) or OutcomeError.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeSuccess
	case IsFlowControl(err):
		return OutcomeBusy
	default:
		return OutcomeError
	}
}
