package lock

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotAcquired reports that another owner holds a resource. Acquire
	// returns it as a *BusyError, which carries the holder's remaining TTL.
	ErrNotAcquired = errors.New("lock: not acquired")

	// ErrNotHeld reports that a lease no longer owns its resources: its TTL
	// ran out, or another owner took them after it did.
	ErrNotHeld = errors.New("lock: not held")

	// ErrClosed reports use of a Locker after Close.
	ErrClosed = errors.New("lock: locker closed")
)

// BusyError reports contention: Resource was held by another owner for TTL
// more when Acquire gave up. errors.Is(err, ErrNotAcquired) is true.
type BusyError struct {
	Resource Resource
	// TTL is the holder's remaining time to live as last seen, a good delay
	// before trying again. Zero when unknown.
	TTL time.Duration
	// Owner is the holder's Options.Owner, empty when it gave none.
	Owner string
}

func (e *BusyError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("lock: %q busy for %s", e.Resource.String(), e.TTL)
	}
	return fmt.Sprintf("lock: %q busy for %s, held by %s", e.Resource.String(), e.TTL, e.Owner)
}

// Unwrap returns ErrNotAcquired.
func (e *BusyError) Unwrap() error { return ErrNotAcquired }
