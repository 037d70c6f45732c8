package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

// Issue 14: the demo on a real 3-master Redis Cluster, as a new user
// would run it, keeps every invariant. Before issue 12 every multi-type
// checkout failed here with CROSSSLOT.
func TestDemo_OnRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.Cluster(t, 3, 0)
	url := "redis-cluster://" + strings.Join(cluster.Addrs(), ",")
	code, s := runDemoJSON(t, "-orders", "120", "-seed", "5", "-redis-url", url)
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.OK, "%+v", s.Violations)
	require.Positive(t, s.Orders.Reserved)
	require.Positive(t, s.Locks.Contended, "the workload must contend")
	// It ran on the cluster, not beside it: every master holds some of
	// its keys (fence counters, asynq's queues, the ledger).
	for _, m := range cluster.Masters() {
		n, err := m.Client(t).DBSize(t.Context()).Result()
		require.NoError(t, err)
		require.Positive(t, n, "master %s holds none of the demo's keys", m.Addr())
	}
}

// The demo through Redis Sentinel, as a new user would point it there.
func TestDemo_OnRedisSentinel(t *testing.T) {
	t.Parallel()
	sentinel := redistest.Sentinel(t)
	url := "redis-sentinel://" + strings.Join(sentinel.SentinelAddrs(), ",") + "/" + sentinel.MasterName()
	code, s := runDemoJSON(t, "-orders", "120", "-seed", "6", "-redis-url", url)
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.OK, "%+v", s.Violations)
	require.Positive(t, s.Locks.Contended, "the workload must contend")
	n, err := sentinel.Master().Client(t).DBSize(t.Context()).Result()
	require.NoError(t, err)
	require.Positive(t, n, "the demo's keys are not on the master the sentinels name")
}

// demoThroughAFailover runs the demo on url and, once it is under way,
// calls fail, which must take the Redis that holds the demo's queue away
// and return once a replacement serves. The demo must ride it out: every
// invariant holds, and its longest pause (the time it finished no
// checkout and no task) holds the moment the replacement served.
func demoThroughAFailover(t *testing.T, url string, fail func()) {
	t.Helper()
	done := startDemo(t, "-orders", "1000", "-seed", "8", "-redis-url", url)
	time.Sleep(1500 * time.Millisecond)
	failed := time.Now()
	fail()
	serving := time.Now()
	code, s := demoResult(t, done)
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.OK, "%+v", s.Violations)
	from := s.Pause.From
	to := from.Add(time.Duration(s.Pause.Ms * float64(time.Millisecond)))
	t.Logf("failover took %s; the demo's longest pause: %.0f ms, from %s after the failure began; %d steps retried; %.1f s in all",
		serving.Sub(failed).Round(time.Millisecond), s.Pause.Ms, from.Sub(failed).Round(time.Millisecond), s.Orders.Retried, s.Seconds)
	// On Cluster the shop stops only where it needs the dead master's
	// slots (a sold-out checkout needs none of the queue's): the pause may
	// begin a little after the failure, but it holds the failover's end.
	require.True(t, from.Before(serving), "the longest pause began after the failover")
	require.True(t, to.After(serving), "the longest pause ended before the replacement served")
	require.Greater(t, s.Seconds, serving.Sub(failed).Seconds(), "the demo did not run through the failure")
}

// Issue 14: a hard kill of the Sentinel master mid-run. The workers
// follow the promoted replica, the checkouts retry, no invariant breaks.
func TestDemo_ThroughASentinelFailover(t *testing.T) {
	t.Parallel()
	sentinel := redistest.Sentinel(t)
	url := "redis-sentinel://" + strings.Join(sentinel.SentinelAddrs(), ",") + "/" + sentinel.MasterName()
	demoThroughAFailover(t, url, func() { sentinel.KillMaster() })
}

// Issue 14: a hard kill, mid-run, of the Cluster master that holds the
// demo's default queue; its replica takes over.
func TestDemo_ThroughAClusterFailover(t *testing.T) {
	t.Parallel()
	cluster := redistest.Cluster(t, 3, 1)
	url := "redis-cluster://" + strings.Join(cluster.Addrs(), ",")
	demoThroughAFailover(t, url, func() { cluster.Kill(cluster.MasterOf("asynq:{default}")) })
}
