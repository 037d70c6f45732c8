// Package middleware holds the asynq middlewares of a turnstile worker:
// the lock guard, which runs each task of a registered type under a lease on
// the resources its payload names, and panic recovery.
//
//	guard := middleware.NewGuard(locker, rdb, middleware.GuardConfig{Queues: []string{"default"}})
//	err := guard.Register(middleware.Rule{
//		Type:     "payment:refund",
//		Keys:     func(t *asynq.Task) ([]lock.Resource, error) { return refundKeys(t) },
//		MaxRetry: 5,
//		Timeout:  30 * time.Second,
//	})
//	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
//		IsFailure:      middleware.IsFailure,
//		RetryDelayFunc: guard.RetryDelay,
//	})
//	mux.Use(middleware.Recover(logger), guard.Middleware)
//
// # Contention
//
// A task whose resources are held either waits for the release (a few
// tasks per key and process, for a short budget) or parks: it returns a
// busy error, which IsFailure does not count against the retry budget,
// with a long safety-net retry delay, and its ID joins a per-key list in
// Redis. Every release moves the head of that list straight to the head of
// its queue's pending list, so the next contender runs within milliseconds
// instead of waiting for asynq's retry scan. Guarded task types therefore
// need MaxRetry >= 1: asynq archives a task whose retries are used up
// before it looks at the error.
package middleware
