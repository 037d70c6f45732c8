package redistest

import (
	"errors"
	"io"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Mini starts an in-process miniredis that is closed when the test ends.
// Use [miniredis.Miniredis.FastForward] to expire keys without waiting.
func Mini(tb testing.TB) *miniredis.Miniredis {
	tb.Helper()
	return miniredis.RunT(tb)
}

// MiniClient starts a miniredis as [Mini] does and returns it with a client
// connected to it. The client is closed when the test ends, before the
// miniredis.
func MiniClient(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	tb.Helper()
	mr := Mini(tb)
	return mr, newClient(tb, mr.Addr())
}

// newClient returns a client for addr that is closed when the test ends.
func newClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	closeAtEnd(tb, addr, rdb)
	return rdb
}

// closeAtEnd closes c, a client for what, when the test ends.
func closeAtEnd(tb testing.TB, what string, c io.Closer) {
	tb.Helper()
	tb.Cleanup(func() {
		// ErrClosed: the test may have closed the client itself.
		if err := c.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			tb.Errorf("redistest: close client for %s: %v", what, err)
		}
	})
}
