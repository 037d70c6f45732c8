package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// An order's notifications are its own, in the order they were recorded,
// with their deliveries: not those of an order whose ID starts with its
// own, nor those of an ID the scan's pattern would read as a wildcard.
func TestStore_OrderNotifications(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s := eventShop(t, be.client(t))
			at := time.Now().UTC().Truncate(time.Millisecond)
			note := func(o *ledger.Order, kind string, after time.Duration) ledger.Notification {
				return ledger.Notification{ID: o.ID + ":" + kind, OrderID: o.ID, Kind: kind, Text: kind, At: at.Add(after)}
			}
			rock, prefix, glob := eventOrder("o-1", "rock", "pit"), eventOrder("o-10", "rock", "pit"), eventOrder("o*", "rock", "pit")
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: rock, Outbox: []ledger.Notification{note(rock, "confirmed", 0)}}))
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: prefix, Outbox: []ledger.Notification{note(prefix, "confirmed", 0)}}))
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: glob, Outbox: []ledger.Notification{note(glob, "confirmed", 0)}}))
			_, err := s.Deliver(ctx, "o-1")
			require.NoError(t, err)
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: rock, Outbox: []ledger.Notification{note(rock, "refunded:r-1", time.Second)}}))

			got, err := s.OrderNotifications(ctx, "o-1")
			require.NoError(t, err)
			require.Equal(t, []ledger.OrderNotification{
				{Notification: note(rock, "confirmed", 0), Deliveries: 1},
				{Notification: note(rock, "refunded:r-1", time.Second), Deliveries: 0},
			}, got)
			got, err = s.OrderNotifications(ctx, "o*")
			require.NoError(t, err)
			require.Len(t, got, 1, "a '*' in the ID is no wildcard")
			require.Equal(t, "o*:confirmed", got[0].ID)
			got, err = s.OrderNotifications(ctx, "o-nope")
			require.NoError(t, err)
			require.Empty(t, got)
		})
	}
}
