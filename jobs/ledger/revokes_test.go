package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// An order committed with a RevokeAt is due from then until a commit
// without one (paid, revoked) takes it off, in every event; the revoke a
// checkout schedules in the queue can be lost apart from that commit
// (another master on Cluster), and this is what finds the order again.
func TestStore_DueRevokes(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			s := ledger.New(be.client(t), "")
			for _, tt := range []ledger.TicketType{
				{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"},
				{ID: "sax", Event: "jazz", Capacity: 10, Price: 900, Currency: "EUR"},
			} {
				require.NoError(t, s.AddTicketType(ctx, tt))
			}
			now := time.Now()
			reserve := func(id, tt, event string, at time.Time) *ledger.Order {
				o := newOrder(id)
				o.Items, o.Event = []ledger.Item{{TicketType: tt, Quantity: 1}}, event
				require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: o, RevokeAt: at}))
				return o
			}
			reserve("o-late", "gold", "", now.Add(-time.Minute))
			paid := reserve("o-paid", "gold", "", now.Add(-time.Minute))
			reserve("o-jazz", "sax", "jazz", now.Add(-time.Second))
			reserve("o-later", "gold", "", now.Add(time.Hour))

			paid.State = ledger.StatePaid
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: paid}))

			due, err := s.DueRevokes(ctx, now, 10)
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"o-late", "o-jazz"}, due)
			due, err = s.DueRevokes(ctx, now, 1)
			require.NoError(t, err)
			require.Len(t, due, 1, "the limit")
			due, err = s.DueRevokes(ctx, now.Add(2*time.Hour), 10)
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"o-late", "o-jazz", "o-later"}, due)
		})
	}
}
