package redistest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/keyslot"
	"github.com/turnstilehq/turnstile/internal/redistest"
)

// recoverTimeout bounds how long a client may fail after a fixture said the
// deployment had settled again: only until it has reloaded the map.
const recoverTimeout = 10 * time.Second

func TestCluster(t *testing.T) {
	t.Parallel()

	t.Run("WritesAcrossSlots", func(t *testing.T) {
		t.Parallel()
		c := redistest.Cluster(t, 3, 1)
		require.Len(t, c.Masters(), 3)
		require.Len(t, c.Replicas(), 3)
		require.Len(t, c.Addrs(), 6)
		rdb := c.Client(t)
		ctx := t.Context()

		owners := make(map[string]int)
		for i := range 100 {
			key := fmt.Sprintf("k%d", i)
			require.NoError(t, rdb.Set(ctx, key, i, 0).Err())
			owners[c.MasterOf(key).Addr()]++
		}
		require.Len(t, owners, 3, "100 keys land on every master")
		for i := range 100 {
			key := fmt.Sprintf("k%d", i)
			require.Equal(t, fmt.Sprint(i), rdb.Get(ctx, key).Val())
			// MasterOf agrees with the master itself, which only serves its
			// own slots.
			got, err := c.MasterOf(key).Client(t).Get(ctx, key).Result()
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(i), got)
		}
		require.Equal(t, int64(keyslot.Of("k1")), rdb.ClusterKeySlot(ctx, "k1").Val())
	})

	t.Run("FailoverKeepsKeys", func(t *testing.T) {
		t.Parallel()
		c := redistest.Cluster(t, 3, 1)
		rdb := c.Client(t)
		ctx := t.Context()
		const key = "failover"
		require.NoError(t, rdb.Set(ctx, key, "before", 0).Err())
		old := c.MasterOf(key)
		replica := c.ReplicasOf(old)[0]

		promoted := c.Failover(old)

		require.Equal(t, replica, promoted)
		require.Equal(t, promoted, c.MasterOf(key))
		require.Equal(t, []*redistest.Process{old}, c.ReplicasOf(promoted), "the old master follows the new one")
		require.Equal(t, "master", promoted.Client(t).Do(ctx, "ROLE").Val().([]any)[0])
		// A coordinated failover loses nothing, and the client follows it
		// by MOVED without failing a command.
		require.Equal(t, "before", rdb.Get(ctx, key).Val())
		require.NoError(t, rdb.Set(ctx, key, "after", 0).Err())
		require.Equal(t, "after", promoted.Client(t).Get(ctx, key).Val())
	})

	t.Run("KillRecovers", func(t *testing.T) {
		t.Parallel()
		c := redistest.Cluster(t, 3, 1)
		rdb := c.Client(t)
		ctx := t.Context()
		const key = "kill"
		old := c.MasterOf(key)
		replica := c.ReplicasOf(old)[0]
		// SET and WAIT on one connection to the key's master: the kill
		// must not take the write with it.
		var acked *redis.Cmd
		_, err := old.Client(t).Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, key, "before", 0)
			acked = pipe.Do(ctx, "WAIT", 1, 5000)
			return nil
		})
		require.NoError(t, err)
		require.EqualValues(t, 1, acked.Val(), "the replica has the key")

		start := time.Now()
		promoted := c.Kill(old)
		t.Logf("replica took over %s after the kill", time.Since(start).Round(time.Millisecond))

		require.Equal(t, replica, promoted)
		require.Zero(t, old.Pid())
		require.Equal(t, promoted, c.MasterOf(key))
		require.NotContains(t, c.Addrs(), old.Addr())
		require.Eventually(t, func() bool {
			return rdb.Get(ctx, key).Val() == "before"
		}, recoverTimeout, 10*time.Millisecond, "the replica kept the acknowledged write")
		require.Eventually(t, func() bool {
			return rdb.Set(ctx, key, "after", 0).Err() == nil
		}, recoverTimeout, 10*time.Millisecond, "writes to the killed master's slots resume")
		require.Equal(t, "after", rdb.Get(ctx, key).Val())
		require.Equal(t, "after", promoted.Client(t).Get(ctx, key).Val())
	})
}

// Cluster refuses what redis-cli --cluster create cannot build.
func TestCluster_TooFewMasters(t *testing.T) {
	t.Parallel()
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.Cluster(rec, 2, 0)
		rec.msg = "Cluster returned"
	}()
	<-done
	require.Contains(t, rec.msg, "need at least 3 masters")
}

// fatalRecorder records Fatalf and ends the goroutine calling it, as
// testing does, without failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// With redis-server but no redis-cli on PATH, Cluster skips, or fails when
// CI=true, as Server does without redis-server.
func TestCluster_MissingRedisCli(t *testing.T) {
	t.Parallel()
	if os.Getenv(missingBinaryEnv) == "1" {
		redistest.Cluster(t, 3, 0) // must Skip or Fatal
		t.Fatal("Cluster returned without redis-cli on PATH")
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		redistest.Server(t) // skips or fails as the missing binary requires
	}
	path := t.TempDir()
	require.NoError(t, os.Symlink(server, filepath.Join(path, "redis-server")))

	t.Run("SkipsOutsideCI", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "TestCluster_MissingRedisCli", path, "")
		require.NoError(t, err, out)
		require.Contains(t, out, "--- SKIP: TestCluster_MissingRedisCli")
		require.Contains(t, out, "redis-cli is not on PATH")
		require.Contains(t, out, "apt-get install redis-tools")
	})

	t.Run("FailsInCI", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "TestCluster_MissingRedisCli", path, "true")
		var exitErr *exec.ExitError
		require.ErrorAs(t, err, &exitErr, out)
		require.Contains(t, out, "--- FAIL: TestCluster_MissingRedisCli")
		require.Contains(t, out, "redis-cli is not on PATH and CI=true")
	})
}
