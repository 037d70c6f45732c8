package netfault_test

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/netfault"
	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Each fault does to a real redis-server's client what it says, and Clear
// undoes it.
func TestProxy_Faults(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	p := netfault.Start(t, srv.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, ReadTimeout: 300 * time.Millisecond, PoolSize: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := t.Context()
	require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err(), "through the plain proxy")

	require.NoError(t, p.Latency(150*time.Millisecond))
	start := time.Now()
	require.NoError(t, rdb.Ping(ctx).Err())
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "the reply was not delayed")
	p.Clear(t.Context())

	require.NoError(t, p.Blackhole())
	start = time.Now()
	err := rdb.Ping(ctx).Err()
	require.Error(t, err, "a swallowed command answered")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "it failed before the client's read timeout: not a black hole")
	p.Clear(t.Context())
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 5*time.Second, 20*time.Millisecond, "no recovery after Clear")

	require.NoError(t, p.Reset(0))
	start = time.Now()
	require.Error(t, rdb.Ping(ctx).Err(), "the connection was not cut")
	require.Less(t, time.Since(start), 300*time.Millisecond, "cut only by the client's timeout: not a reset")
	p.Clear(t.Context())
	require.Eventually(t, func() bool { return rdb.Ping(ctx).Err() == nil }, 5*time.Second, 20*time.Millisecond, "no recovery after Clear")
	require.Equal(t, "v", rdb.Get(ctx, "k").Val())

	// The server closes (QUIT); the client sees the close late.
	require.NoError(t, p.SlowClose(300*time.Millisecond))
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("QUIT\r\n"))
	require.NoError(t, err)
	start = time.Now()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(conn)
	require.NoError(t, err, "the close never came")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "the close was not delayed")
}

// A connection opened while Reset is on is cut with an RST, as its doc
// says, and a fault added twice is an error, not a second toxic.
func TestProxy_ResetNewConnection(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	p := netfault.Start(t, srv.Addr())
	require.NoError(t, p.Reset(0))
	require.Error(t, p.Reset(0), "the same fault twice")
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("PING\r\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Read(make([]byte, 16))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	p.Clear(t.Context())
	require.NoError(t, p.Reset(0), "Clear removed the fault")
}
