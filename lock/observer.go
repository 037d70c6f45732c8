package lock

import (
	"context"
	"time"
)

// An Observer is told about every acquisition, release and lost lease, so
// that tracing and metrics can be attached without this package importing
// them. Methods are called synchronously on the caller's goroutine (or the
// lease's refresher) and must be quick and safe for concurrent use.
type Observer interface {
	// Acquired is called once per Acquire, whatever its outcome.
	Acquired(ctx context.Context, ev AcquireEvent)
	// Released is called once per Release that reached a verdict or failed.
	Released(ctx context.Context, ev ReleaseEvent)
	// Lost is called when a lease stops being provably held before Release:
	// its refresh failed or its TTL passed.
	Lost(ctx context.Context, ev LostEvent)
}

// AcquireEvent describes one call to Acquire.
type AcquireEvent struct {
	Resources []Resource
	TTL       time.Duration
	// Start is when Acquire was called; Wait is how long it took.
	Start time.Time
	Wait  time.Duration
	// Attempts counts the scripts run against Redis (per node in quorum mode).
	Attempts int
	// Contended is when Acquire first found a resource held (zero if never),
	// HolderTTL that holder's remaining TTL, and Holder its Options.Owner.
	Contended time.Time
	HolderTTL time.Duration
	Holder    string
	// Fences are the fencing tokens, in Resources order, on success.
	Fences []int64
	// Passed is set when the lease was passed by a holder of this process
	// (Options.Cohort): Attempts is then zero, no Redis round trip.
	Passed bool
	// Err is nil on success, a *BusyError when contended past the wait
	// budget, or the context's or Redis's error.
	Err error
}

// ReleaseEvent describes one Release.
type ReleaseEvent struct {
	Resources []Resource
	Fences    []int64
	// Held is the time from acquisition to release.
	Held time.Duration
	// Passed is set when the lease passed to a waiter of this process
	// instead of going back to Redis (Options.Cohort).
	Passed bool
	// Err is nil when released, ErrNotHeld when the lease had already lost
	// its resources (its TTL was too tight), or the Redis error.
	Err error
}

// LostEvent describes a lease that lost its resources before Release.
type LostEvent struct {
	Resources []Resource
	Fences    []int64
	Held      time.Duration
	// Err says why: ErrNotHeld when Redis answered that another owner has
	// the resource or it expired, or the last Redis error of the refresher.
	Err error
}

type nopObserver struct{}

func (nopObserver) Acquired(context.Context, AcquireEvent) {}
func (nopObserver) Released(context.Context, ReleaseEvent) {}
func (nopObserver) Lost(context.Context, LostEvent)        {}
