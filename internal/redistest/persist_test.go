package redistest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

// A crash that loses the writes after a point of the append-only file:
// what came before is back, what came after is gone.
func TestProcess_CrashTo(t *testing.T) {
	t.Parallel()
	srv := redistest.ServerWith(t, "--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0")
	rdb := srv.Client(t)
	ctx := t.Context()
	require.NoError(t, rdb.Set(ctx, "kept", "1", 0).Err())
	synced := srv.AOFSize()
	require.NoError(t, rdb.Set(ctx, "lost", "1", 0).Err())
	require.Greater(t, srv.AOFSize(), synced, "the second write never reached the file")

	srv.CrashTo(synced)
	require.Equal(t, "1", rdb.Get(ctx, "kept").Val(), "a write before the cut was lost")
	require.Zero(t, rdb.Exists(ctx, "lost").Val(), "a write after the cut survived")
}

// A wipe loses everything, append-only file or not, and the server keeps
// its port and takes writes again.
func TestProcess_Wipe(t *testing.T) {
	t.Parallel()
	srv := redistest.ServerWith(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := srv.Client(t)
	ctx := t.Context()
	require.NoError(t, rdb.Set(ctx, "synced", "1", 0).Err())
	srv.Wipe()
	require.Zero(t, rdb.DBSize(ctx).Val(), "a key outlived the wipe")
	require.NoError(t, rdb.Set(ctx, "after", "1", 0).Err())
	srv.Restart()
	require.Equal(t, "1", rdb.Get(ctx, "after").Val(), "the server lost its persistence with the wipe")
}
