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
	due, err := s.byScore(ctx, "revokes", t, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: due revokes: %w", err)
	}
	return due, nil
}

// byScore returns up to limit members, of every event's sorted set named
// set, whose score (unix ms) is at or before t, lowest first per event.
func (s *Store) byScore(ctx context.Context, set string, t time.Time, limit int) ([]string, error) {
	events, err := s.events(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ev := range events {
		if len(ids) >= limit {
			break
		}
		part, err := s.rdb.ZRangeByScore(ctx, s.key(ev, set), &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(t.UnixMilli(), 10), Count: int64(limit - len(ids)),
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("%s of event %q: %w", set, ev, err)
		}
		ids = append(ids, part...)
	}
	return ids, nil
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
