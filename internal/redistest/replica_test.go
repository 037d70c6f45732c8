package redistest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestReplica(t *testing.T) {
	t.Parallel()

	t.Run("HoldsWhatItsMasterHeld", func(t *testing.T) {
		t.Parallel()
		master := redistest.Server(t)
		require.NoError(t, master.Client(t).Set(t.Context(), "before", "1", 0).Err())
		replica := redistest.Replica(t, master)
		rc := replica.Client(t)
		require.Equal(t, "1", rc.Get(t.Context(), "before").Val(), "the initial sync is done")

		require.NoError(t, master.Client(t).Set(t.Context(), "after", "2", 0).Err())
		master.WaitReplicated(1)
		require.Equal(t, "2", rc.Get(t.Context(), "after").Val())
		require.Error(t, rc.Set(t.Context(), "k", "v", 0).Err(), "a replica is read-only")
	})

	// The shape of a failover that loses a write: the replica is held back,
	// the master takes a write and dies, the replica is promoted without it.
	t.Run("PromotedAfterLosingAWrite", func(t *testing.T) {
		t.Parallel()
		master := redistest.Server(t)
		mc := master.Client(t)
		replica := redistest.Replica(t, master)
		require.NoError(t, mc.Set(t.Context(), "k", "replicated", 0).Err())
		master.WaitReplicated(1)

		replica.Pause()
		require.Equal(t, 1, master.DropReplicas())
		require.NoError(t, mc.Set(t.Context(), "k", "lost", 0).Err())
		master.Stop()
		replica.Resume()
		replica.Promote()

		rc := replica.Client(t)
		require.Equal(t, "replicated", rc.Get(t.Context(), "k").Val(), "the last write never reached the replica")
		require.NoError(t, rc.Set(t.Context(), "k", "written after the failover", 0).Err(), "a promoted replica takes writes")
		require.Equal(t, "master", rc.Do(t.Context(), "ROLE").Val().([]any)[0])
	})
}
