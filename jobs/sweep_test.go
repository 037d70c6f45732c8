package jobs_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A revoke task lost apart from its order's commit (the queue's master
// failing over on Cluster) left the order's tickets reserved for good. The
// sweep finds the order in the ledger, due in the same commit that
// reserved it, and schedules its revoke again; a revoke that still exists,
// and an order that was paid, are left alone.
func TestSweepRevokes_ReschedulesALostRevoke(t *testing.T) {
	t.Parallel()
	s := miniShop(t)
	s.svc.PaymentWindow = 50 * time.Millisecond
	lost := s.reserve(t, "o-lost", gold(3))
	kept := s.reserve(t, "o-kept", gold(1))
	paid := s.reserve(t, "o-paid", gold(1))
	require.NoError(t, s.confirm(t, paid, "wh-1"))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+lost.ID), "losing the revoke")
	time.Sleep(60 * time.Millisecond)

	n, err := s.svc.SweepRevokes(t.Context(), 0)
	require.NoError(t, err)
	require.Equal(t, 1, n, "rescheduled: the lost revoke only")
	ti, err := s.inspect.GetTaskInfo("default", "revoke:"+lost.ID)
	require.NoError(t, err, "the lost revoke was not scheduled again")
	require.Equal(t, jobs.KindRevoke, ti.Type)
	// The order whose revoke exists is put back, not left at the head of
	// the next sweep's batch.
	due, err := s.svc.Store.DueRevokes(t.Context(), time.Now(), 10)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{lost.ID}, due, "an order whose revoke exists stayed due")

	// The rescheduled revoke runs like the first would have.
	for _, o := range []*ledger.Order{lost, kept} {
		require.NoError(t, run(t, s, o.ID, s.svc.Revoke, jobs.RevokeArgs{OrderID: o.ID}))
		require.Equal(t, ledger.StateRevoked, s.order(t, o.ID).State)
	}
	require.Equal(t, int64(9), s.goldLeft(t), "the paid order's ticket only")
	due, err = s.svc.Store.DueRevokes(t.Context(), time.Now(), 10)
	require.NoError(t, err)
	require.Empty(t, due, "a revoked order is no longer due")
	require.True(t, s.check(t).OK)

	// Within the grace, nothing is swept: the scheduled revoke is on its way.
	fresh := s.reserve(t, "o-fresh", gold(1))
	require.NoError(t, s.inspect.DeleteTask("default", "revoke:"+fresh.ID))
	n, err = s.svc.SweepRevokes(t.Context(), time.Hour)
	require.NoError(t, err)
	require.Zero(t, n)
}
