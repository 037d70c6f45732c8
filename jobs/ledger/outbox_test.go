package ledger_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A commit that records a notification lists its order as undelivered,
// in every event, until Deliver sends it: a worker that dies between the
// two leaves an order a sweep can find (jobs.Service.SweepOutbox).
func TestStore_Undelivered(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rdb := be.client(t)
			s := eventShop(t, rdb)
			note := func(o *ledger.Order, kind string) []ledger.Notification {
				return []ledger.Notification{{ID: o.ID + ":" + kind, OrderID: o.ID, Kind: kind}}
			}
			before := time.Now().Add(-time.Second)
			rock, jazz, quiet := eventOrder("o-r", "rock", "pit"), eventOrder("o-j", "jazz", "lounge"), newOrder("o-q")
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: rock, Outbox: note(rock, "confirmed")}))
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: jazz, Outbox: note(jazz, "confirmed")}))
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: quiet}))
			undelivered := func(at time.Time, limit int) []string {
				ids, err := s.Undelivered(ctx, at, limit)
				require.NoError(t, err)
				return ids
			}
			soon := time.Now().Add(time.Second)
			require.ElementsMatch(t, []string{"o-r", "o-j"}, undelivered(soon, 10), "an order without notifications is not listed")
			require.Len(t, undelivered(soon, 1), 1, "the limit")
			require.Empty(t, undelivered(before, 10), "listed from the commit on")

			// A later commit keeps the order's oldest time: a sweep's
			// grace counts from the notification that waited longest.
			undeliveredKey := ledger.DefaultPrefix + "{ledger:rock}:undelivered"
			require.NoError(t, rdb.ZAddXX(ctx, undeliveredKey, redis.Z{Score: 1000, Member: "o-r"}).Err())
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: rock, Outbox: note(rock, "refunded")}))
			score, err := rdb.ZScore(ctx, undeliveredKey, "o-r").Result()
			require.NoError(t, err)
			require.InDelta(t, 1000, score, 0, "a later commit moved the order's time")

			n, err := s.Deliver(ctx, "o-r")
			require.NoError(t, err)
			require.Equal(t, 2, n)
			require.Equal(t, []string{"o-j"}, undelivered(soon, 10), "Deliver takes the order off")

			// A retried job records the same notification again: sent, it
			// stays sent, and the order is not listed again.
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: rock, Outbox: note(rock, "confirmed")}))
			require.Equal(t, []string{"o-j"}, undelivered(soon, 10), "a notification already sent listed its order again")
			n, err = s.Deliver(ctx, "o-j")
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.Empty(t, undelivered(soon, 10))
			_, delivered, err := s.Outbox(ctx)
			require.NoError(t, err)
			require.Equal(t, map[string]int64{"o-r:confirmed": 1, "o-r:refunded": 1, "o-j:confirmed": 1}, delivered)
		})
	}
}
