package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DueRevokes returns up to limit IDs of orders, of every event, whose
// RevokeAt is at or before t and that no commit has taken off since: the
// reserved orders whose payment window closed, whether or not their
// revoke task still exists.
func (s *Store) DueRevokes(ctx context.Context, t time.Time, limit int) ([]string, error) {
	events, err := s.events(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: due revokes: %w", err)
	}
	var due []string
	for _, ev := range events {
		if len(due) >= limit {
			break
		}
		ids, err := s.rdb.ZRangeByScore(ctx, s.key(ev, "revokes"), &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(t.UnixMilli(), 10), Count: int64(limit - len(due)),
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("ledger: due revokes of event %q: %w", ev, err)
		}
		due = append(due, ids...)
	}
	return due, nil
}

// PostponeRevoke makes an order that is still due for its revoke due
// again at t instead: one whose revoke task exists (retrying, archived)
// must not keep its place at the head of DueRevokes, or enough of them
// would hide every order behind them. An order no longer due stays so.
func (s *Store) PostponeRevoke(ctx context.Context, orderID string, t time.Time) error {
	ev, err := s.orderEvent(ctx, orderID)
	if err != nil {
		return err
	}
	err = s.rdb.ZAddXX(ctx, s.key(ev, "revokes"), redis.Z{Score: float64(t.UnixMilli()), Member: orderID}).Err()
	if err != nil {
		return fmt.Errorf("ledger: postpone the revoke of order %s: %w", orderID, err)
	}
	return nil
}
