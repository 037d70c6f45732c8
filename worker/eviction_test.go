package worker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

// openLogged is OpenRedis on url with its log in a buffer.
func openLogged(t *testing.T, url string) string {
	t.Helper()
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.RedisURL = url
	_, closeRedis, err := OpenRedis(t.Context(), cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err, "an eviction policy is a warning, never a failure to start")
	require.NoError(t, closeRedis())
	return logs.String()
}

// A Redis that may evict keys can drop a held lock (another worker then
// takes it while its holder still works), a fence counter or asynq's
// tasks: start-up says so loudly, naming the policy.
func TestOpenRedis_WarnsOfEviction(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	admin := srv.Client(t)

	logs := openLogged(t, "redis://"+srv.Addr())
	require.NotContains(t, logs, "level=WARN", "noeviction, redis-server's default, is what turnstile needs")
	require.NotContains(t, logs, "maxmemory")

	for policy, risk := range map[string]string{
		"allkeys-lru":    "fence counters",
		"allkeys-random": "asynq's tasks",
		"volatile-ttl":   "held locks",
		"volatile-lfu":   "held locks",
	} {
		require.NoError(t, admin.ConfigSet(t.Context(), "maxmemory-policy", policy).Err())
		logs := openLogged(t, "redis://"+srv.Addr())
		require.Contains(t, logs, "level=WARN msg=\"REDIS MAY EVICT KEYS", policy)
		require.Contains(t, logs, "maxmemory_policy="+policy, policy)
		require.Contains(t, logs, risk, policy)
		require.Contains(t, logs, "addr="+srv.Addr(), policy)
	}
}

// Managed Redis often forbids or renames CONFIG: then start-up says it
// could not check, at info level, and goes on.
func TestOpenRedis_EvictionUncheckable(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	admin := srv.Client(t)
	require.NoError(t, admin.ConfigSet(t.Context(), "maxmemory-policy", "allkeys-lru").Err())
	require.NoError(t, admin.Do(t.Context(), "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all", "-config").Err())

	logs := openLogged(t, "redis://app:app-pw@"+srv.Addr())
	require.NotContains(t, logs, "level=WARN")
	require.Contains(t, logs, "level=INFO msg=\"cannot read maxmemory-policy")
	require.Contains(t, logs, "NOPERM")
	require.Equal(t, 1, strings.Count(logs, "maxmemory-policy"), "one line")

	// miniredis knows no CONFIG, as a Redis that renamed it.
	mr := redistest.Mini(t)
	logs = openLogged(t, "redis://"+mr.Addr())
	require.NotContains(t, logs, "level=WARN")
	require.Contains(t, logs, "level=INFO msg=\"cannot read maxmemory-policy")
}

// Each node is named: in a cluster, warnEviction asks every master, and
// the warning says which one may evict.
func TestCheckEviction_NamesTheNode(t *testing.T) {
	t.Parallel()
	a, b := redistest.Server(t), redistest.Server(t)
	require.NoError(t, b.Client(t).ConfigSet(t.Context(), "maxmemory-policy", "allkeys-lfu").Err())
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	for _, srv := range []*redistest.Process{a, b} {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { require.NoError(t, c.Close()) })
		checkEviction(t.Context(), c, srv.Addr(), logger)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
	require.Contains(t, logs.String(), "addr="+b.Addr())
	require.NotContains(t, logs.String(), "addr="+a.Addr())
}

// A cluster client is checked master by master (here miniredis, which
// answers CLUSTER SLOTS as one node and knows no CONFIG).
func TestWarnEviction_Cluster(t *testing.T) {
	t.Parallel()
	mr := redistest.Mini(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr()}})
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	var logs bytes.Buffer
	warnEviction(t.Context(), c, slog.New(slog.NewTextHandler(&logs, nil)))
	require.Contains(t, logs.String(), "level=INFO msg=\"cannot read maxmemory-policy")
	require.Contains(t, logs.String(), "addr="+mr.Addr(), "the master is named")
}
