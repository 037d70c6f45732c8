package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// An OrderNotification is a notification recorded for an order, with how
// many times Deliver sent it (0 while it waits).
type OrderNotification struct {
	Notification
	Deliveries int64 `json:"deliveries"`
}

// globEscaper escapes what a Redis MATCH pattern would read as a wildcard.
var globEscaper = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)

// scanCount is how many outbox entries one HSCAN step looks at.
const scanCount = 1000

// OrderNotifications returns the notifications recorded for an order,
// oldest first, with their delivery counts: an observer's read (an admin
// API, a support tool), unfenced. An order unknown or without
// notifications has none.
//
// A notification's ID starts with its order's ID and a colon (see
// Notification), so they are the outbox entries of the order's event
// whose ID has that prefix. The outbox has no index by order: this scans
// the event's outbox, one step per scanCount entries, so its cost grows
// with the event's notifications, not the order's. Fine for an API that a
// person or a test calls now and then, not for a hot path.
func (s *Store) OrderNotifications(ctx context.Context, orderID string) ([]OrderNotification, error) {
	ev, err := s.orderEvent(ctx, orderID)
	if err != nil {
		return nil, err
	}
	outbox := s.key(ev, "outbox")
	it := s.rdb.HScan(ctx, outbox, 0, globEscaper.Replace(orderID)+":*", scanCount).Iterator()
	var (
		notes []OrderNotification
		ids   []string
	)
	for it.Next(ctx) {
		id := it.Val()
		if !it.Next(ctx) {
			break
		}
		var n Notification
		if err := json.Unmarshal([]byte(it.Val()), &n); err != nil {
			return nil, fmt.Errorf("ledger: notification %s: %w", id, err)
		}
		if n.OrderID != orderID {
			continue // another order's whose ID the pattern matched all the same
		}
		if slices.Contains(ids, id) {
			continue // HSCAN may return an entry twice while the hash grows
		}
		notes, ids = append(notes, OrderNotification{Notification: n}), append(ids, id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("ledger: notifications of order %s: %w", orderID, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	counts, err := s.rdb.HMGet(ctx, s.key(ev, "deliveries"), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: deliveries of order %s: %w", orderID, err)
	}
	for i, c := range counts {
		if c, ok := c.(string); ok {
			if notes[i].Deliveries, err = strconv.ParseInt(c, 10, 64); err != nil {
				return nil, fmt.Errorf("ledger: deliveries %s: %w", ids[i], err)
			}
		}
	}
	slices.SortStableFunc(notes, func(a, b OrderNotification) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return notes, nil
}
