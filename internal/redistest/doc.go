// Package redistest gives tests a Redis to talk to.
//
// [Server] starts a real, throwaway redis-server on a free 127.0.0.1 port and
// kills it by pid when the test ends. It can also pause the process (SIGSTOP),
// stop it and start it again on the same port, which is how tests reproduce a
// stalled or restarted Redis. [Mini] and [MiniClient] start an in-process
// miniredis instead, for fast tests that need no real server.
//
// [Cluster] and [Sentinel] start the two deployments users move to when one
// Redis is not enough, so that code can be tested on them as they run in
// production: a Redis Cluster of masters and replicas, created with
// redis-cli, and a master and replica watched by three sentinels. Both
// wait until the deployment has settled, and both can fail a master over
// the way production does, by killing it, so that a test sees what clients
// see during a failover.
//
//	c := redistest.Cluster(t, 3, 1) // three masters, one replica each
//	rdb := c.Client(t)              // a *redis.ClusterClient
//	c.Kill(c.MasterOf("k"))         // returns once the replica has taken over
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		srv := redistest.Server(t) // skips (or fails when CI=true) without redis-server
//		rdb := srv.Client(t)
//		require.NoError(t, rdb.Set(t.Context(), "k", "v", 0).Err())
//	}
//
// Nothing here touches a Redis it did not start: each process has its own
// port and its own temporary directory, and keeps nothing on disk but a
// cluster node's nodes.conf and a sentinel's config.
//
// The package is internal: only this module's tests import it.
package redistest
