package lock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// Issue 12, item 1, through a real replica. Replication is asynchronous, so
// a failover can lose the last writes: holder A got fence F, the master died
// before the replica had F, and the promoted replica's counter is behind
// with no lock on the resource. The next holder's fence must still be
// larger than F, or a store that accepts equal fences takes both writes.
func TestLocker_FenceAfterFailover(t *testing.T) {
	t.Parallel()
	master := redistest.Server(t)
	replica := redistest.Replica(t, master)
	mc := master.Client(t)
	redistest.CheckSlots(t, mc)
	cfg := lock.Config{TTL: 10 * time.Second}
	r := lock.Key("failover")
	fenceKey := lock.DefaultPrefix + "{" + r.String() + "}:fence"

	// A first lease, which the replica has.
	lease, err := newTestLocker(t, mc, cfg).Acquire(t.Context(), r)
	require.NoError(t, err)
	replicated := lease.Fence(r)
	require.NoError(t, lease.Release(t.Context()))
	master.WaitReplicated(1)

	// Hold back replication, then take the lock again: only the master has
	// fence F. Pausing the replica alone is not enough: what the master
	// sends is kept in the replica's socket buffer and read on resume.
	replica.Pause()
	require.Equal(t, 1, master.DropReplicas())
	lost, err := newTestLocker(t, mc, cfg).Acquire(t.Context(), r)
	require.NoError(t, err)
	f := lost.Fence(r)
	require.Greater(t, f, replicated)

	// The master dies; the replica is promoted with what it had.
	master.Stop()
	replica.Resume()
	replica.Promote()
	rc := replica.Client(t)
	redistest.CheckSlots(t, rc)
	behind, err := rc.Get(t.Context(), fenceKey).Int64()
	require.NoError(t, err)
	require.Equal(t, replicated, behind, "the promoted replica's counter must have missed fence %d", f)
	requireFree(t, rc, r)

	next, err := newTestLocker(t, rc, cfg).Acquire(t.Context(), r)
	require.NoError(t, err)
	require.Greater(t, next.Fence(r), f, "a fence repeated after the failover")
	require.NoError(t, next.Release(t.Context()))
}
