package ledger_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// BenchmarkStore_History is what recording costs a fenced read and commit
// on a real redis-server: None against File (two unbuffered writes per
// operation) in the same run.
func BenchmarkStore_History(b *testing.B) {
	rdb := redistest.Server(b).Client(b)
	base := ledger.New(rdb, "")
	require.NoError(b, base.Commit(b.Context(), nil, ledger.Change{Order: newOrder("o-1")}))
	rec, err := history.Create(filepath.Join(b.TempDir(), "history.jsonl"))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, rec.Close()) })
	for _, bc := range []struct {
		name  string
		store *ledger.Store
	}{{"None", base}, {"File", base.WithHistory(rec)}, {"Memory", base.WithHistory(&history.Memory{})}} {
		b.Run(bc.name, func(b *testing.B) {
			fences := []ledger.Fence{{Resource: "order:o-1", Token: 1}}
			for b.Loop() {
				o, err := bc.store.Order(b.Context(), "o-1", fences...)
				if err != nil {
					b.Fatal(err)
				}
				if err := bc.store.Commit(b.Context(), fences, ledger.Change{Order: o}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStore_CommitCheck is what checking that the read still stands
// costs a fenced commit of an order and a count on a real redis-server:
// Unchecked commits a copy without the read's mark and without
// AvailableWas, Checked the order as read, in the same run.
func BenchmarkStore_CommitCheck(b *testing.B) {
	rdb := redistest.Server(b).Client(b)
	s := ledger.New(rdb, "")
	require.NoError(b, s.AddTicketType(b.Context(), ledger.TicketType{ID: "gold", Capacity: 1 << 40}))
	fences := []ledger.Fence{{Resource: "order:o-1", Token: 1}, {Resource: "ticket_type:gold:inventory", Token: 1}}
	require.NoError(b, s.Commit(b.Context(), fences, ledger.Change{Order: newOrder("o-1")}))
	for _, checked := range []bool{false, true} {
		name := map[bool]string{false: "Unchecked", true: "Checked"}[checked]
		b.Run(name, func(b *testing.B) {
			o, err := s.Order(b.Context(), "o-1", fences...)
			require.NoError(b, err)
			_, n, err := s.TicketType(b.Context(), "gold", fences[1])
			require.NoError(b, err)
			for b.Loop() {
				ch := ledger.Change{Order: o, Available: map[string]int64{"gold": n - 1}}
				if checked {
					ch.AvailableWas = map[string]int64{"gold": n}
				} else {
					copied := *newOrder("o-1")
					copied.Number, copied.Created = o.Number, o.Created
					ch.Order = &copied
				}
				if err := s.Commit(b.Context(), fences, ch); err != nil {
					b.Fatal(err)
				}
				if o, err = s.Order(b.Context(), "o-1", fences...); err != nil {
					b.Fatal(err)
				}
				n--
			}
		})
	}
}
