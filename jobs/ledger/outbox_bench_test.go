package ledger_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// BenchmarkStore_CommitOutbox is what a commit and its delivery cost on a
// real redis-server, the undelivered index included: Bare commits the
// order alone, Outbox with a new notification and delivers it.
func BenchmarkStore_CommitOutbox(b *testing.B) {
	rdb := redistest.Server(b).Client(b)
	s := ledger.New(rdb, "")
	o := newOrder("o-1")
	require.NoError(b, s.Commit(b.Context(), nil, ledger.Change{Order: o}))
	b.Run("Bare", func(b *testing.B) {
		for b.Loop() {
			if err := s.Commit(b.Context(), nil, ledger.Change{Order: o}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Outbox", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			note := ledger.Notification{ID: "o-1:n:" + strconv.Itoa(i), OrderID: "o-1", Kind: "refunded"}
			if err := s.Commit(b.Context(), nil, ledger.Change{Order: o, Outbox: []ledger.Notification{note}}); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Deliver(b.Context(), "o-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
