// Package redistest gives tests a Redis to talk to.
//
// [Server] starts a real, throwaway redis-server on a free 127.0.0.1 port and
// kills it by pid when the test ends. It can also pause the process (SIGSTOP),
// stop it and start it again on the same port, which is how tests reproduce a
// stalled or restarted Redis. [Mini] and [MiniClient] start an in-process
// miniredis instead, for fast tests that need no real server.
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		srv := redistest.Server(t) // skips (or fails when CI=true) without redis-server
//		rdb := srv.Client(t)
//		require.NoError(t, rdb.Set(t.Context(), "k", "v", 0).Err())
//	}
//
// Server never touches a Redis it did not start: each one has its own port
// and its own temporary directory, and keeps nothing on disk.
//
// The package is internal: only this module's tests import it.
package redistest
