package ledger

import (
	"context"
	"fmt"
	"time"
)

// Undelivered returns up to limit IDs of orders, of every event, that
// have notifications still pending from a commit at or before t, oldest
// first within an event. A job delivers its order's notifications after
// its locks are released; a worker killed, paused or cut off in between
// leaves them pending, and this is what finds them again. The index is
// kept by the scripts that fill and empty the pending sets, in the same
// atomic steps: a commit that records a notification adds the order with
// the time of that commit (an order already there keeps the older one),
// and Deliver takes it off, so it lists an order exactly while one of its
// notifications waits. A commit by a build older than the index added
// nothing to it: the next job on such an order delivers what it left.
func (s *Store) Undelivered(ctx context.Context, t time.Time, limit int) ([]string, error) {
	ids, err := s.byScore(ctx, "undelivered", t, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: undelivered: %w", err)
	}
	return ids, nil
}
