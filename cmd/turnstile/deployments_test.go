package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/worker"
)

// Issue 14: the demo on a real 3-master Redis Cluster, as a new user
// would run it, keeps every invariant. Before issue 12 every multi-type
// checkout failed here with CROSSSLOT. Issue 16: a run removes its keys
// from every master, and only its own.
func TestDemo_OnRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.Cluster(t, 3, 0)
	url := "redis-cluster://" + strings.Join(cluster.Addrs(), ",")
	code, kept := runDemoJSON(t, "-orders", "120", "-seed", "5", "-redis-url", url, "-keep")
	require.Equal(t, exitOK, code, "%+v", kept.Violations)
	require.True(t, kept.OK, "%+v", kept.Violations)
	require.Positive(t, kept.Orders.Reserved)
	require.Positive(t, kept.Locks.Contended, "the workload must contend")
	require.True(t, kept.Cleanup.Kept)
	// It ran on the cluster, not beside it: every master holds some of
	// the kept run's keys (its ledger, its fencing counters).
	runKeys := func(m *redistest.Process, runID string) []string {
		keys, err := m.Client(t).Keys(t.Context(), "*"+runID+"*").Result()
		require.NoError(t, err)
		return keys
	}
	for _, m := range cluster.Masters() {
		require.NotEmpty(t, runKeys(m, kept.Cleanup.RunID), "master %s holds none of the demo's keys", m.Addr())
	}

	code, s := runDemoJSON(t, "-orders", "120", "-seed", "5", "-redis-url", url)
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.OK, "%+v", s.Violations)
	require.Empty(t, s.Cleanup.Error)
	require.Positive(t, s.Cleanup.Keys)
	require.Positive(t, s.Cleanup.Tasks)
	for _, m := range cluster.Masters() {
		require.Empty(t, runKeys(m, s.Cleanup.RunID), "master %s keeps keys of the removed run", m.Addr())
		require.NotEmpty(t, runKeys(m, kept.Cleanup.RunID), "master %s lost the kept run's keys", m.Addr())
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

// demoThrough runs the demo on url and, 1.5 s into it, calls fail, which
// must take Redis away and return once it serves again. The demo must
// ride it out with every invariant kept. It returns the summary and when
// fail began and returned.
func demoThrough(t *testing.T, url string, fail func()) (s demoSummary, failed, serving time.Time) {
	t.Helper()
	done := startDemo(t, "-orders", "1000", "-seed", "8", "-redis-url", url)
	time.Sleep(1500 * time.Millisecond)
	failed = time.Now()
	fail()
	serving = time.Now()
	code, s := demoResult(t, done)
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.OK, "%+v", s.Violations)
	t.Logf("the failure took %s; the demo's longest pause: %.0f ms, from %s after the failure began; %d steps retried; %.1f s in all",
		serving.Sub(failed).Round(time.Millisecond), s.Pause.Ms, s.Pause.From.Sub(failed).Round(time.Millisecond), s.Orders.Retried, s.Seconds)
	require.Greater(t, s.Seconds, serving.Sub(failed).Seconds(), "the demo did not run through the failure")
	return s, failed, serving
}

// demoThroughAFailover is demoThrough for a failover, whose cost is the
// demo's longest pause (the time it finished no checkout and no task):
// that pause overlaps the failover. On Cluster the shop stops only where
// it needs the dead master's slots (a sold-out checkout needs none of the
// queue's), and the client may use the new master before every node
// agrees on it: the pause may begin after the failure and end before the
// fixture sees the failover done. Its client learns of the new master
// from the sentinels on its own schedule, so under load the pause may
// also begin just after the fixture saw the promotion (88 ms in a CI run).
func demoThroughAFailover(t *testing.T, url string, fail func()) {
	t.Helper()
	s, failed, serving := demoThrough(t, url, fail)
	to := s.Pause.From.Add(time.Duration(s.Pause.Ms * float64(time.Millisecond)))
	if !s.Pause.From.Before(serving.Add(time.Second)) {
		// Replication is asynchronous: the promoted replica may lack
		// completions the dead master acknowledged. Those tasks come back
		// active, held by no worker, and asynq recovers them once their
		// lease has been expired 30 s, on its recoverer's next minute
		// (see TestDemo_ThroughARedisCrashThatLosesTheLastSecond): that
		// stall, not the failover, is then the longest pause, 113 s in
		// one run here. It must stay within asynq's bound.
		t.Logf("the longest pause is asynq's recovery of tasks the failover orphaned: %.0f ms, from %s after the failover", s.Pause.Ms, s.Pause.From.Sub(serving).Round(time.Millisecond))
		require.Less(t, s.Pause.Ms, float64((150 * time.Second).Milliseconds()), "a pause longer than asynq's recovery")
		return
	}
	require.True(t, to.After(failed), "the longest pause ended before the failure")
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

// Issue 14: a worker, the enqueue command and the enqueue API on
// redis-sentinel://, through a hard kill of the master. After the
// promotion the same worker runs what both enqueue, and the test reports
// the pause: from the kill to the first task run after it.
func TestWorkerAndEnqueue_OnRedisSentinelThroughAFailover(t *testing.T) {
	t.Parallel()
	sentinel := redistest.Sentinel(t)
	adminAddr := freeAddr(t)
	const token = "test-admin-token-0123"
	env := map[string]string{
		"TURNSTILE_REDIS_URL":  "redis-sentinel://" + strings.Join(sentinel.SentinelAddrs(), ",") + "/" + sentinel.MasterName(),
		"TURNSTILE_ADMIN_ADDR": adminAddr, "TURNSTILE_ADMIN_TOKEN": token, "TURNSTILE_POLL_INTERVAL": "10ms",
	}
	ran := make(chan string, 16)
	types := []worker.TaskType{itemType(func(_ context.Context, t *asynq.Task) error {
		ran <- string(t.Payload())
		return nil
	})}
	logs, stop := startWorkerCmd(t, env, types)
	enqueue := func(item string) (int, string) {
		code, _, stderr := enqueueCmd(t, env, types, "test:item", "-json", `{"item":"`+item+`"}`)
		return code, stderr
	}
	awaitRun := func(item string) time.Time {
		t.Helper()
		for {
			select {
			case got := <-ran:
				if got == `{"item":"`+item+`"}` {
					return time.Now()
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the worker did not run %s; its log:\n%s", item, logs.String())
			}
		}
	}
	code, stderr := enqueue("before")
	require.Equal(t, exitOK, code, stderr)
	awaitRun("before")

	killed := time.Now()
	sentinel.KillMaster()
	promoted := time.Now()
	code, stderr = enqueue("after")
	require.Equal(t, exitOK, code, "enqueue on the promoted master: %s", stderr)
	ranAfter := awaitRun("after")
	t.Logf("promotion took %s; the first task after the kill ran %s after it",
		promoted.Sub(killed).Round(time.Millisecond), ranAfter.Sub(killed).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodPost, "http://"+adminAddr+"/api/v1/tasks/test:item", token, `{"item":"http"}`)
		return code == http.StatusCreated
	}, 20*time.Second, 100*time.Millisecond, "the admin API did not enqueue after the failover")
	awaitRun("http")

	stop()
}

// Issue 15: Redis crashes 1.5 s into the run and comes back from its
// append-only file without the last second of writes it had acknowledged
// (appendfsync everysec: what a machine crash costs). Held locks, queued
// tasks, orders and payments of that second are gone; what is left must
// still keep every invariant, and the demo must ride it out. A job that
// read before the crash and commits after it is refused (ledger.ErrChanged)
// and retried: without that check, 2 runs in 4 broke the inventory. The
// gateway keeps its books apart, as a real one does, so webhooks and
// refund requests acknowledged in the lost second leave it ahead of the
// ledger: those orders are to reconcile, and may make the exit code 1;
// nothing else may. Tasks whose completion was lost come back active,
// held by no worker: asynq recovers them once their 30 s lease has been
// expired for 30 s more, on its recoverer's next minute, so the run
// stalls 60-120 s after the crash (109-117 s measured).
func TestDemo_ThroughARedisCrashThatLosesTheLastSecond(t *testing.T) {
	t.Parallel()
	srv := redistest.ServerWith(t, "--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0")
	// 4,000 orders take about 8 s without a fault: the crash, 2.5 s in,
	// strikes mid-run on a slow machine too.
	done := startDemo(t, "-orders", "4000", "-seed", "8", "-redis-url", "redis://"+srv.Addr())
	time.Sleep(1500 * time.Millisecond)
	synced := srv.AOFSize()
	time.Sleep(time.Second)
	crashed := time.Now()
	srv.CrashTo(synced)
	code, s := demoResult(t, done)
	require.Empty(t, s.Violations)
	require.Equal(t, len(s.Unreconciled) == 0, code == exitOK, "exit %d with %d orders to reconcile", code, len(s.Unreconciled))
	require.Greater(t, s.Seconds, 2.5, "the demo ended before the crash")
	t.Logf("%d reserved orders lost with the last second, %d to reconcile with the gateway; longest pause %.0f ms from %s after the crash; %d steps retried; %.1f s in all",
		s.Orders.Lost, len(s.Unreconciled), s.Pause.Ms, s.Pause.From.Sub(crashed).Round(time.Millisecond), s.Orders.Retried, s.Seconds)
}
