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
