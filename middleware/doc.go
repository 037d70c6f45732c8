// Package middleware holds the asynq middlewares of a turnstile worker:
// the lock guard, which runs each task of a registered type under a lease on
// the resources its payload names; tracing; archiving of task types no
// handler serves; and panic recovery.
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
//	mux.Use(middleware.Recover(logger), middleware.Tracing(tp, mp),
//		middleware.ArchiveUnknown, guard.Middleware)
//
// # Contention
//
// A task whose resources are held either waits for the release (a few
// tasks per key and process, for a short budget) or parks: it returns a
// busy error, which IsFailure does not count against the retry budget,
// and its ID joins a per-key list in Redis. The release of the key moves
// the head of that list straight to the head of its queue's pending list,
// in every queue a task parked on the key from, so the next contender
// runs within milliseconds instead of waiting for asynq's retry scan. A
// holder that crashes releases nothing, so a busy task also retries by
// itself once the holder's lease would have run out (RetryDelay: the
// holder's remaining TTL plus a second, at most GuardConfig.SafetyNet).
// Guarded task types therefore need MaxRetry >= 1: asynq archives a task
// whose retries are used up before it looks at the error.
//
// # Abandoned handlers
//
// asynq gives up on a handler at its timeout (and on shutdown) and may run
// the task again elsewhere while the first run goes on. The guard keeps
// such a handler's lease refreshed until it really returns, up to
// Rule.MaxHold, cancels its context when the lease is lost, and Shutdown
// waits for it, so that its lock is released before the Redis clients
// close.
package middleware
