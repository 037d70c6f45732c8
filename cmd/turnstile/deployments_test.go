package main

import (
	"strings"
	"testing"

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
