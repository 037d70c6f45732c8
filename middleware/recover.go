package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/hibiken/asynq"
)

// Recover turns a handler's panic into an error, logged with its stack, so
// the worker survives and the task is retried. Put it outermost: the
// guard's deferred release has already run when the panic reaches it.
func Recover(logger *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
			defer func() {
				if v := recover(); v != nil {
					logger.ErrorContext(ctx, "task panicked", slog.String("task_type", t.Type()),
						slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
					err = fmt.Errorf("%s: panic: %v", t.Type(), v)
				}
			}()
			return next.ProcessTask(ctx, t)
		})
	}
}
