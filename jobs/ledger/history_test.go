package ledger_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

// outcomes returns each recorded access's resource, kind and outcome, in
// order, pending ones included.
func outcomes(h *history.Memory) []string {
	var out []string
	for _, r := range h.Records() {
		out = append(out, r.Resource+" "+string(r.Kind)+" "+string(r.Outcome))
	}
	return out
}

func TestStore_WithHistory(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			var h history.Memory
			plain := ledger.New(be.client(t), "")
			s := plain.WithHistory(&h)
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: newOrder("o-1")}), "no fences, nothing to record")
			require.Empty(t, h.Records())

			require.NoError(t, s.Commit(ctx, []ledger.Fence{{Resource: "a", Token: 5}}, ledger.Change{Order: newOrder("o-1")}))
			_, err := s.Order(ctx, "o-1", ledger.Fence{Resource: "b", Token: 1}, ledger.Fence{Resource: "a", Token: 3})
			require.ErrorIs(t, err, ledger.ErrStaleFence)
			_, err = plain.Order(ctx, "o-1", ledger.Fence{Resource: "a", Token: 9})
			require.NoError(t, err, "the Store it came from records nothing")
			require.NoError(t, s.AddTicketType(ctx, ledger.TicketType{ID: "gold", Capacity: 10}))
			_, _, err = s.TicketType(ctx, "gold", ledger.Fence{Resource: "a", Token: 9})
			require.NoError(t, err)
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			require.Error(t, s.Commit(cancelled, []ledger.Fence{{Resource: "a", Token: 10}}, ledger.Change{}))

			require.Equal(t, []string{
				"a commit pending", "a commit accepted",
				"b read pending", "a read pending", "b read aborted", "a read refused",
				"a read pending", "a read accepted",
				"a commit pending", "a commit unknown", // no answer: it may have run
			}, outcomes(&h))
			recs := h.Records()
			for i := 0; i < len(recs); i += 2 {
				require.Equal(t, recs[i].Op, recs[i+1].Op, "an op's records share its number")
			}
			done := recs[1]
			require.Equal(t, int64(5), done.Token)
			require.Equal(t, os.Getpid(), done.PID)
			require.LessOrEqual(t, done.Start, done.End)
			require.WithinDuration(t, time.Now(), time.Unix(0, done.End), time.Minute)
		})
	}
}

// TestStore_HistoryCatchesMissingFenceCheck plays a holder that stalls past
// its lock's TTL between its fenced read and its commit, while another
// takes the lock, reads and commits. The real store refuses the late
// commit and the history is linearizable; a store whose commit script
// skips the fence check accepts it, and the history checker says so, on
// that resource.
func TestStore_HistoryCatchesMissingFenceCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutant bool
	}{{"Store", false}, {"MutantWithoutCommitFenceCheck", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			rdb := serverClient(t)
			var h history.Memory
			s := ledger.New(rdb, "").WithHistory(&h)
			if tc.mutant {
				var err error
				s, err = ledger.WithoutCommitFenceCheck(s)
				require.NoError(t, err)
			}
			require.NoError(t, s.Commit(ctx, nil, ledger.Change{Order: newOrder("o-1")}))
			const ttl = 100 * time.Millisecond
			locker, err := lock.New(rdb, lock.Config{TTL: ttl, Wait: time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, locker.Close()) })
			key := lock.Key("order", "o-1")

			late, err := locker.Acquire(ctx, key)
			require.NoError(t, err)
			lateFence := []ledger.Fence{{Resource: key.String(), Token: late.Fence(key)}}
			stale, err := s.Order(ctx, "o-1", lateFence...)
			require.NoError(t, err)
			time.Sleep(ttl * 3 / 2) // the fault: a pause past the TTL

			next, err := locker.Acquire(ctx, key) // free by now: the late lease expired
			require.NoError(t, err)
			nextFence := []ledger.Fence{{Resource: key.String(), Token: next.Fence(key)}}
			// The newer holder has read, and is about to commit what it
			// computed: from here only its fence keeps the late holder
			// out (the order is as both read it, so ErrChanged would not).
			_, err = s.Order(ctx, "o-1", nextFence...)
			require.NoError(t, err)

			stale.State = ledger.StateRevoked
			err = s.Commit(ctx, lateFence, ledger.Change{Order: stale})
			require.ErrorIs(t, late.Release(ctx), lock.ErrNotHeld)
			require.NoError(t, next.Release(ctx))

			res, checkErr := history.Check(h.Records())
			require.NoError(t, checkErr)
			t.Log(res)
			if !tc.mutant {
				require.ErrorIs(t, err, ledger.ErrStaleFence)
				require.True(t, res.OK(), res.String())
				require.Equal(t, 1, res.Totals().Refused)
				return
			}
			require.NoError(t, err, "the mutant takes the late commit")
			got, err := s.Order(ctx, "o-1")
			require.NoError(t, err)
			require.Equal(t, ledger.StateRevoked, got.State, "under the newer holder's read")
			v := res.Violations()
			require.Len(t, v, 1)
			require.Equal(t, key.String(), v[0].Resource)
			require.Equal(t, history.Violation, v[0].Verdict)
			require.FileExists(t, v[0].Visualization)
			t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(v[0].Visualization)) })
		})
	}
}
