package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestParseRedisURL_Single(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, o *redis.Options)
	}{
		{"Plain", "redis://localhost:6379", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "tcp", o.Network)
			require.Equal(t, "localhost:6379", o.Addr)
			require.Zero(t, o.DB)
			require.Nil(t, o.TLSConfig)
			require.Empty(t, o.Username)
			require.Empty(t, o.Password)
		}},
		{"DefaultPort", "redis://cache.internal", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "cache.internal:6379", o.Addr)
		}},
		{"UserPasswordDB", "redis://alice:p%40ss%2Fw0rd@10.0.0.5:6380/3", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "10.0.0.5:6380", o.Addr)
			require.Equal(t, "alice", o.Username)
			require.Equal(t, "p@ss/w0rd", o.Password)
			require.Equal(t, 3, o.DB)
		}},
		{"PasswordOnly", "redis://:secret@h", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Empty(t, o.Username)
			require.Equal(t, "secret", o.Password)
		}},
		{"DBQuery", "redis://h/1?db=4", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, 4, o.DB)
		}},
		{"TLS", "rediss://bob:pw@redis.example.com:6380/0", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.NotNil(t, o.TLSConfig)
			require.Equal(t, "redis.example.com", o.TLSConfig.ServerName)
			require.Equal(t, uint16(tls.VersionTLS12), o.TLSConfig.MinVersion)
			require.False(t, o.TLSConfig.InsecureSkipVerify)
			require.Equal(t, "bob", o.Username)
			require.Equal(t, "pw", o.Password)
		}},
		{"GoRedisQueryOptions", "rediss://h?dial_timeout=3&pool_size=7&skip_verify=true", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, 3*time.Second, o.DialTimeout)
			require.Equal(t, 7, o.PoolSize)
			require.True(t, o.TLSConfig.InsecureSkipVerify)
		}},
		{"IPv6", "redis://[::1]:7000", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "[::1]:7000", o.Addr)
		}},
		{"Unix", "unix://u:pw@/run/redis.sock?db=2", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "unix", o.Network)
			require.Equal(t, "/run/redis.sock", o.Addr)
			require.Equal(t, 2, o.DB)
			require.Equal(t, "pw", o.Password)
		}},
		{"SchemeCaseAndSpace", "  REDIS://h:1/2 ", func(t *testing.T, o *redis.Options) {
			t.Helper()
			require.Equal(t, "h:1", o.Addr)
			require.Equal(t, 2, o.DB)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := ParseRedisURL(tt.raw)
			require.NoError(t, err)
			require.Equal(t, RedisSingle, opts.Mode)
			require.Nil(t, opts.Failover)
			require.Nil(t, opts.Cluster)
			require.NotNil(t, opts.Single)
			tt.check(t, opts.Single)
		})
	}
}

func TestParseRedisURL_Sentinel(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, o *redis.FailoverOptions)
	}{
		{"Hosts", "redis-sentinel://s1:26380,s2,[::1]/mymaster", func(t *testing.T, o *redis.FailoverOptions) {
			t.Helper()
			require.Equal(t, "mymaster", o.MasterName)
			require.Equal(t, []string{"s1:26380", "s2:26379", "[::1]:26379"}, o.SentinelAddrs)
			require.Zero(t, o.DB)
			require.Nil(t, o.TLSConfig)
			require.Empty(t, o.Password)
			require.Empty(t, o.SentinelPassword)
		}},
		{"CredentialsAreForData", "redis-sentinel://alice:pw%3A1@s1:26379,s2:26379/mymaster/2", func(t *testing.T, o *redis.FailoverOptions) {
			t.Helper()
			require.Equal(t, "alice", o.Username)
			require.Equal(t, "pw:1", o.Password)
			require.Equal(t, 2, o.DB)
			require.Empty(t, o.SentinelUsername)
			require.Empty(t, o.SentinelPassword)
		}},
		{"SentinelCredentials", "redis-sentinel://:data@s1/m?sentinel_username=sen&sentinel_password=s%26p&db=5", func(t *testing.T, o *redis.FailoverOptions) {
			t.Helper()
			require.Equal(t, "data", o.Password)
			require.Equal(t, "sen", o.SentinelUsername)
			require.Equal(t, "s&p", o.SentinelPassword)
			require.Equal(t, 5, o.DB)
		}},
		{"MasterNameQuery", "redis-sentinel://s1?master_name=mm&addr=s9:1", func(t *testing.T, o *redis.FailoverOptions) {
			t.Helper()
			require.Equal(t, "mm", o.MasterName)
			require.Equal(t, []string{"s1:26379", "s9:1"}, o.SentinelAddrs)
		}},
		{"TLS", "rediss-sentinel://s1.example:26379/m?dial_timeout=2s", func(t *testing.T, o *redis.FailoverOptions) {
			t.Helper()
			require.NotNil(t, o.TLSConfig)
			require.Equal(t, "s1.example", o.TLSConfig.ServerName)
			require.Equal(t, uint16(tls.VersionTLS12), o.TLSConfig.MinVersion)
			require.Equal(t, 2*time.Second, o.DialTimeout)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := ParseRedisURL(tt.raw)
			require.NoError(t, err)
			require.Equal(t, RedisSentinel, opts.Mode)
			require.Nil(t, opts.Single)
			require.Nil(t, opts.Cluster)
			require.NotNil(t, opts.Failover)
			tt.check(t, opts.Failover)
		})
	}
}

func TestParseRedisURL_Cluster(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		raw   string
		check func(t *testing.T, o *redis.ClusterOptions)
	}{
		{"Hosts", "redis-cluster://n1:7000,n2:7001,n3", func(t *testing.T, o *redis.ClusterOptions) {
			t.Helper()
			require.Equal(t, []string{"n1:7000", "n2:7001", "n3:6379"}, o.Addrs)
			require.Nil(t, o.TLSConfig)
			require.Empty(t, o.Password)
			require.Equal(t, ClusterStateReload, o.ClusterStateReloadInterval)
		}},
		{"UserPassword", "redis-cluster://carol:pa%20ss@n1:7000,n2:7001/", func(t *testing.T, o *redis.ClusterOptions) {
			t.Helper()
			require.Equal(t, "carol", o.Username)
			require.Equal(t, "pa ss", o.Password)
			require.Equal(t, []string{"n1:7000", "n2:7001"}, o.Addrs)
		}},
		{"GoRedisAddrParams", "redis-cluster://n1:7000?addr=n2:7001&addr=n3:7002&read_only=true", func(t *testing.T, o *redis.ClusterOptions) {
			t.Helper()
			require.ElementsMatch(t, []string{"n1:7000", "n2:7001", "n3:7002"}, o.Addrs)
			require.True(t, o.ReadOnly)
		}},
		{"TLS", "rediss-cluster://n1.example:7000,n2.example:7000", func(t *testing.T, o *redis.ClusterOptions) {
			t.Helper()
			require.NotNil(t, o.TLSConfig)
			require.Equal(t, "n1.example", o.TLSConfig.ServerName)
			require.Equal(t, uint16(tls.VersionTLS12), o.TLSConfig.MinVersion)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := ParseRedisURL(tt.raw)
			require.NoError(t, err)
			require.Equal(t, RedisCluster, opts.Mode)
			require.Nil(t, opts.Single)
			require.Nil(t, opts.Failover)
			require.NotNil(t, opts.Cluster)
			tt.check(t, opts.Cluster)
		})
	}
}

func TestParseRedisURL_Embedded(t *testing.T) {
	t.Parallel()

	for _, raw := range []string{"", "  "} {
		opts, err := ParseRedisURL(raw)
		require.NoError(t, err)
		require.Equal(t, RedisOptions{Mode: RedisEmbedded}, opts)
	}
}

func TestParseRedisURL_Errors(t *testing.T) {
	t.Parallel()

	const pw = "Pa55-w0rd-xyz"
	tests := []struct {
		name, raw, want string
	}{
		{"NoScheme", "localhost:6379", "not a URL"},
		{"NoSchemeBarePassword", pw, "not a URL"},
		{"UnknownScheme", "http://u:" + pw + "@h", `unknown scheme "http"`},
		{"BadDB", "redis://u:" + pw + "@h/x", "invalid database number"},
		{"UnknownOption", "redis://u:" + pw + "@h?colour=blue", "unexpected option: colour"},
		{"BadOptionValue", "redis://u:" + pw + "@h?pool_size=big", "pool_size"},
		{"BadPort", "redis://u:" + pw + "@h:port", "malformed URL"},
		{"SeveralHostsSingle", "redis://u:" + pw + "@h1,h2", "redis-sentinel:// or redis-cluster://"},
		{"UnescapedSlash", "redis://u:Pa55/w0rd-xyz@h", "unescaped"},
		{"UnescapedQuestion", "redis://u:Pa55?w0rd-xyz@h", "unescaped"},
		{"BadEscape", "redis://u:" + pw + "%zz@h", "percent-escapes"},
		{"BadEscapeInQuery", "redis-sentinel://s/m?sentinel_password=" + pw + "%zz", "malformed query"},
		{"SentinelNoMaster", "redis-sentinel://u:" + pw + "@s1,s2", "no master name"},
		{"SentinelTwoMasters", "redis-sentinel://s1/m?master_name=n", "both in the path"},
		{"SentinelLongPath", "redis-sentinel://s1/m/0/x", "/master/db"},
		{"SentinelBadDB", "redis-sentinel://u:" + pw + "@s1/m/x", "invalid database number"},
		{"SentinelDoubleCredentials", "redis-sentinel://u:" + pw + "@s1/m?password=" + pw, "credentials given both"},
		{"SentinelRouteRandomly", "redis-sentinel://s1/m?route_randomly=true", "route_randomly"},
		{"ClusterDB", "redis-cluster://u:" + pw + "@n1,n2/3", "no database number"},
		{"EmptyHost", "redis-cluster://n1,,n2", "empty host"},
		{"BadHostPort", "redis-cluster://n1,n2:x", "invalid port"},
		{"PortOutOfRange", "redis-sentinel://s1:99999/m", "invalid port"},
		{"IPv6NoBrackets", "redis-cluster://n1,::1", "brackets"},
		{"ClusterBadAddrParam", "redis-cluster://u:" + pw + "@n1?addr=nope", "addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRedisURL(tt.raw)
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), pw)
			require.NotContains(t, err.Error(), "w0rd-xyz")
			require.True(t, strings.HasPrefix(err.Error(), "worker: redis url "), err.Error())
		})
	}
}

func TestRedactRedisURL(t *testing.T) {
	t.Parallel()

	tests := []struct{ raw, want string }{
		{"", ""},
		{"redis://h:6379/0", "redis://h:6379/0"},
		{"redis://u:pw@h:6379/0", "redis://u:xxxxx@h:6379/0"},
		{"redis://:pw@h", "redis://:xxxxx@h"},
		{"redis://user@h", "redis://user@h"},
		{"rediss://u:p%40w@h?dial_timeout=3#x", "rediss://u:xxxxx@h?dial_timeout=3#x"},
		{"redis-sentinel://u:pw@s1,s2/m?sentinel_password=sp&db=1", "redis-sentinel://u:xxxxx@s1,s2/m?sentinel_password=xxxxx&db=1"},
		{"redis-sentinel://s1/m?Password=pw", "redis-sentinel://s1/m?Password=xxxxx"},
		{"redis://u:pa/ss@h", "redis://xxxxx"},
		{"redis://u:pa?ss@h", "redis://xxxxx"},
		{"not a url with secret", "xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, RedactRedisURL(tt.raw))
		})
	}
}

func TestOpenRedis_Embedded(t *testing.T) {
	t.Parallel()

	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	rdb, closeRedis, err := OpenRedis(t.Context(), DefaultConfig(), logger)
	require.NoError(t, err)

	require.Equal(t, "PONG", rdb.Ping(t.Context()).Val())
	require.NoError(t, rdb.Set(t.Context(), "k", "v", 0).Err())
	require.Equal(t, "v", rdb.Get(t.Context(), "k").Val())
	client, ok := rdb.(*redis.Client)
	require.True(t, ok, "embedded Redis is one server: got %T", rdb)
	require.True(t, strings.HasPrefix(client.Options().Addr, "127.0.0.1:"), client.Options().Addr)

	require.Contains(t, logs.String(), `"level":"WARN"`)
	require.Contains(t, logs.String(), "in-memory")
	require.Contains(t, logs.String(), `"set_env":"TURNSTILE_REDIS_URL"`)

	require.NoError(t, closeRedis())
	require.NoError(t, closeRedis(), "close twice")
	require.ErrorIs(t, rdb.Ping(t.Context()).Err(), redis.ErrClosed)

	// The embedded server is gone too: a new client cannot reach it.
	other := redis.NewClient(&redis.Options{Addr: client.Options().Addr, MaxRetries: -1})
	defer func() { require.NoError(t, other.Close()) }()
	require.Error(t, other.Ping(t.Context()).Err())
}

func TestOpenRedis_NilLogger(t *testing.T) {
	t.Parallel()

	rdb, closeRedis, err := OpenRedis(t.Context(), DefaultConfig(), nil)
	require.NoError(t, err)
	require.NoError(t, rdb.Ping(t.Context()).Err())
	require.NoError(t, closeRedis())
}

func TestOpenRedis_Single(t *testing.T) {
	t.Parallel()

	const needle = "s3cret-Pw-77"
	mr := redistest.Mini(t)
	mr.RequireUserAuth("alice", needle)

	t.Run("Authenticates", func(t *testing.T) {
		t.Parallel()
		cfg := DefaultConfig()
		cfg.RedisURL = "redis://alice:" + needle + "@" + mr.Addr() + "/0"
		rdb, closeRedis, err := OpenRedis(t.Context(), cfg, nil)
		require.NoError(t, err)
		require.NoError(t, rdb.Set(t.Context(), "who", "alice", 0).Err())
		got, err := mr.Get("who")
		require.NoError(t, err)
		require.Equal(t, "alice", got)
		require.NoError(t, closeRedis())
	})
	t.Run("WrongPasswordFailsAtOpen", func(t *testing.T) {
		t.Parallel()
		cfg := DefaultConfig()
		cfg.RedisURL = "redis://alice:" + needle + "-wrong@" + mr.Addr() + "/0"
		rdb, closeRedis, err := OpenRedis(t.Context(), cfg, nil)
		require.Error(t, err)
		require.Nil(t, rdb)
		require.Nil(t, closeRedis)
		require.Contains(t, err.Error(), "worker: ping redis redis://alice:xxxxx@"+mr.Addr())
		require.NotContains(t, err.Error(), needle)
	})
}

func TestOpenRedis_Unreachable(t *testing.T) {
	t.Parallel()

	const needle = "Unreach-Pw-91"
	tests := []struct{ name, url string }{
		{"Single", "redis://u:" + needle + "@127.0.0.1:1/0?max_retries=-1"},
		{"Sentinel", "redis-sentinel://u:" + needle + "@127.0.0.1:1/mymaster?max_retries=-1"},
		{"Cluster", "redis-cluster://u:" + needle + "@127.0.0.1:1?max_retries=-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			cfg := DefaultConfig()
			cfg.RedisURL = tt.url
			_, _, err := OpenRedis(ctx, cfg, nil)
			require.ErrorContains(t, err, "worker: ping redis ")
			require.Contains(t, err.Error(), "u:xxxxx@127.0.0.1:1")
			require.NotContains(t, err.Error(), needle)
		})
	}
}

func TestOpenRedis_BadURL(t *testing.T) {
	t.Parallel()

	cfg := DefaultConfig()
	cfg.RedisURL = "redis://u:pw-Bad-5@h/x"
	_, _, err := OpenRedis(t.Context(), cfg, nil)
	require.ErrorContains(t, err, "invalid database number")
	require.NotContains(t, err.Error(), "pw-Bad-5")
}

// Each running task may hold a connection while it talks to Redis (a
// blocking command, a slow script), and asynq's own loops need theirs: a
// pool smaller than the worker's concurrency made tasks queue for a
// connection. go-redis's default is 10 per GOMAXPROCS; the worker sizes it
// to its concurrency, unless the URL says otherwise.
func TestOpenRedis_PoolCoversConcurrency(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	cfg := DefaultConfig()
	cfg.RedisURL, cfg.Concurrency = "redis://"+srv.Addr(), 10*runtime.GOMAXPROCS(0)+20
	rdb, closeRedis, err := OpenRedis(t.Context(), cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, closeRedis()) }()

	// Every task slot busy in a blocking command: another command still
	// gets a connection at once.
	var wg sync.WaitGroup
	for i := range cfg.Concurrency {
		wg.Go(func() { _ = rdb.BLPop(t.Context(), time.Second, fmt.Sprint("empty-", i)).Err() })
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	require.NoError(t, rdb.Ping(t.Context()).Err())
	require.Less(t, time.Since(start), 500*time.Millisecond, "a command waited for a pooled connection")
	wg.Wait()

	cfg.RedisURL += "?pool_size=3"
	small, closeSmall, err := OpenRedis(t.Context(), cfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, closeSmall()) }()
	require.Equal(t, 3, small.(*redis.Client).Options().PoolSize, "the URL's pool_size wins")
}
