package redistest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestSentinel(t *testing.T) {
	t.Parallel()
	d := redistest.Sentinel(t)
	require.Len(t, d.SentinelAddrs(), 3)
	master, replica := d.Master(), d.Replica()
	rdb := d.Client(t)
	ctx := t.Context()

	require.NoError(t, rdb.Set(ctx, "k", "before", 0).Err())
	require.Equal(t, "before", master.Client(t).Get(ctx, "k").Val(), "the client writes to the master")
	master.WaitReplicated(1)

	start := time.Now()
	promoted := d.KillMaster()
	t.Logf("sentinels promoted the replica %s after the kill", time.Since(start).Round(time.Millisecond))

	require.Equal(t, replica, promoted)
	require.Equal(t, promoted, d.Master())
	require.Nil(t, d.Replica())
	require.Zero(t, master.Pid())
	// The client finds the new master through the sentinels.
	require.Eventually(t, func() bool {
		return rdb.Get(ctx, "k").Val() == "before"
	}, recoverTimeout, 10*time.Millisecond, "the replicated key is read from the new master")
	require.NoError(t, rdb.Set(ctx, "k", "after", 0).Err())
	require.Equal(t, "after", promoted.Client(t).Get(ctx, "k").Val())
}
