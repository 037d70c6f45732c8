package redistest_test

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestMain(m *testing.M) {
	// Each server has a goroutine waiting on its process; every one must be
	// gone once the cleanups have run.
	goleak.VerifyTestMain(m)
}

func TestServer(t *testing.T) {
	t.Parallel()

	t.Run("AnswersPing", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)

		require.NotZero(t, srv.Pid())
		require.True(t, strings.HasPrefix(srv.Addr(), "127.0.0.1:"), srv.Addr())
		require.NotEqual(t, "127.0.0.1:6379", srv.Addr(), "must never use the shared Redis")
		require.Equal(t, "PONG", rdb.Ping(t.Context()).Val())
	})

	t.Run("KeepsNothingOnDisk", func(t *testing.T) {
		t.Parallel()
		rdb := redistest.Server(t).Client(t)

		cfg, err := rdb.ConfigGet(t.Context(), "*").Result()
		require.NoError(t, err)
		require.Empty(t, cfg["save"])
		require.Equal(t, "no", cfg["appendonly"])
		require.Equal(t, "127.0.0.1", cfg["bind"])
	})

	t.Run("PauseStallsCommandsUntilResume", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := impatientClient(t, srv.Addr())
		require.NoError(t, rdb.Set(t.Context(), "k", "v", 0).Err())

		srv.Pause()
		start := time.Now()
		err := rdb.Get(t.Context(), "k").Err()
		require.Error(t, err)
		var netErr net.Error
		require.ErrorAs(t, err, &netErr)
		require.True(t, netErr.Timeout(), "want a timeout, got %v", err)
		require.Less(t, time.Since(start), 5*time.Second)

		srv.Resume()
		require.Equal(t, "v", rdb.Get(t.Context(), "k").Val())
		srv.Resume() // not paused: no-op
	})

	t.Run("RestartKeepsPortLosesData", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		require.NoError(t, rdb.Set(t.Context(), "k", "v", 0).Err())
		addr, pid := srv.Addr(), srv.Pid()

		srv.Restart()

		require.Equal(t, addr, srv.Addr())
		require.NotEqual(t, pid, srv.Pid())
		// The same client reconnects on its own.
		err := rdb.Get(t.Context(), "k").Err()
		require.ErrorIs(t, err, redis.Nil)
		require.Equal(t, "PONG", rdb.Ping(t.Context()).Val())
	})

	t.Run("StopRefusesConnections", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		require.Equal(t, "PONG", rdb.Ping(t.Context()).Val())

		srv.Stop()
		require.Zero(t, srv.Pid())
		err := impatientClient(t, srv.Addr()).Ping(t.Context()).Err()
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
		srv.Stop() // twice is safe

		srv.Start()
		require.NotZero(t, srv.Pid())
		require.Equal(t, "PONG", rdb.Ping(t.Context()).Val())
	})

	t.Run("StopWhilePaused", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		srv.Pause()
		srv.Pause() // already paused: no-op

		// SIGKILL ends a stopped process too; Stop bounds its own wait.
		srv.Stop()
		require.Zero(t, srv.Pid())
	})

	t.Run("ServersAreIndependent", func(t *testing.T) {
		t.Parallel()
		a, b := redistest.Server(t), redistest.Server(t)
		require.NotEqual(t, a.Addr(), b.Addr())
		require.NoError(t, a.Client(t).Set(t.Context(), "k", "a", 0).Err())
		require.ErrorIs(t, b.Client(t).Get(t.Context(), "k").Err(), redis.Nil)
	})
}

// impatientClient returns a client with short timeouts and no retries, so a
// command against a paused or stopped server fails fast.
func impatientClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr:          addr,
		DialTimeout:   200 * time.Millisecond,
		ReadTimeout:   200 * time.Millisecond,
		WriteTimeout:  200 * time.Millisecond,
		MaxRetries:    -1,
		DialerRetries: 1,
	})
	t.Cleanup(func() { require.NoError(t, rdb.Close()) })
	return rdb
}

// missingBinaryEnv makes TestServer_MissingBinary act as the child process
// that calls Server with no redis-server on PATH.
const missingBinaryEnv = "REDISTEST_MISSING_BINARY_CHILD"

func TestServer_MissingBinary(t *testing.T) {
	t.Parallel()
	if os.Getenv(missingBinaryEnv) == "1" {
		redistest.Server(t) // must Skip or Fatal
		t.Fatal("Server returned without redis-server on PATH")
	}

	t.Run("SkipsOutsideCI", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "TestServer_MissingBinary", t.TempDir(), "")
		require.NoError(t, err, out)
		require.Contains(t, out, "--- SKIP: TestServer_MissingBinary")
		require.Contains(t, out, "redis-server is not on PATH")
	})

	t.Run("FailsInCI", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "TestServer_MissingBinary", t.TempDir(), "true")
		var exitErr *exec.ExitError
		require.ErrorAs(t, err, &exitErr, out)
		require.Contains(t, out, "--- FAIL: TestServer_MissingBinary")
		require.Contains(t, out, "redis-server is not on PATH and CI=true")
	})
}

// runChild runs this test binary's test with the given PATH and CI value,
// and returns its combined output.
func runChild(t *testing.T, test, path, ci string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	env := []string{
		"PATH=" + path,
		"CI=" + ci,
		missingBinaryEnv + "=1",
		// Under -race the child would otherwise sleep 1 s before exiting.
		"GORACE=atexit_sleep_ms=0",
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "PATH" && name != "CI" && name != "GORACE" && name != missingBinaryEnv {
			env = append(env, kv)
		}
	}
	//nolint:gosec // G204: exe is this test binary, re-run with fixed arguments
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^"+test+"$", "-test.v")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMini(t *testing.T) {
	t.Parallel()
	mr, rdb := redistest.MiniClient(t)
	ctx := t.Context()

	require.NoError(t, rdb.Set(ctx, "k", "v", time.Minute).Err())
	got, err := mr.Get("k")
	require.NoError(t, err)
	require.Equal(t, "v", got)

	mr.FastForward(time.Minute)
	require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil)
}

func TestMiniClient_ClosedByTestIsFine(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	require.NoError(t, rdb.Close())
	require.ErrorIs(t, rdb.Ping(t.Context()).Err(), redis.ErrClosed)
}
