package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// env returns a getenv that reads only m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func TestLoadConfig_Defaults(t *testing.T) {
	t.Parallel()

	cfg, err := LoadConfig(newFlagSet(), nil, env(nil))
	require.NoError(t, err)

	require.Empty(t, cfg.RedisURL)
	require.Equal(t, 2*runtime.NumCPU(), cfg.Concurrency)
	require.Equal(t, map[string]int{"critical": 6, "default": 3, "low": 1}, cfg.Queues)
	require.Equal(t, 10*time.Second, cfg.LockTTL)
	require.Equal(t, time.Second, cfg.LockWait)
	require.Equal(t, 30*time.Second, cfg.ShutdownTimeout)
	require.Equal(t, slog.LevelInfo, cfg.LogLevel)
	require.Equal(t, LogFormatText, cfg.LogFormat)
	require.Empty(t, cfg.MetricsAddr)
	require.Equal(t, DefaultConfig(), cfg)
	require.NoError(t, cfg.Validate())

	// DefaultConfig writes the queues as a literal; keep it equal to the
	// documented constant.
	q, err := parseQueues(DefaultQueues)
	require.NoError(t, err)
	require.Equal(t, q, DefaultConfig().Queues)

	// A nil FlagSet and a nil getenv give the defaults too.
	cfg, err = LoadConfig(nil, nil, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultConfig(), cfg)
}

func TestLoadConfig_DefaultQueuesNotShared(t *testing.T) {
	t.Parallel()

	a := DefaultConfig()
	a.Queues["critical"] = 100
	require.Equal(t, 6, DefaultConfig().Queues["critical"])
}

// settings holds, for every variable, a valid non-default value, another
// one, and what each must load as.
var settings = []struct {
	env, flag string
	a, b      string
	get       func(Config) any
	wantA     any
	wantB     any
}{
	{
		"TURNSTILE_REDIS_URL", "redis-url", "redis://a:6379/1", "redis://b:6379/2",
		func(c Config) any { return c.RedisURL }, "redis://a:6379/1", "redis://b:6379/2",
	},
	{
		"TURNSTILE_LOCK_URLS", "lock-urls", "redis://l1,redis://l2, redis://l3", "redis://m1,redis://m2,redis://m3,redis://m4",
		func(c Config) any { return c.LockURLs },
		[]string{"redis://l1", "redis://l2", "redis://l3"},
		[]string{"redis://m1", "redis://m2", "redis://m3", "redis://m4"},
	},
	{
		"TURNSTILE_CONCURRENCY", "concurrency", "7", "3",
		func(c Config) any { return c.Concurrency }, 7, 3,
	},
	{
		"TURNSTILE_QUEUES", "queues", " payments=5 , default=1", "low=2",
		func(c Config) any { return c.Queues },
		map[string]int{"payments": 5, "default": 1},
		map[string]int{"low": 2},
	},
	{
		"TURNSTILE_LOCK_TTL", "lock-ttl", "2s", "750ms",
		func(c Config) any { return c.LockTTL }, 2 * time.Second, 750 * time.Millisecond,
	},
	{
		"TURNSTILE_LOCK_WAIT", "lock-wait", "0s", "250ms",
		func(c Config) any { return c.LockWait }, time.Duration(0), 250 * time.Millisecond,
	},
	{
		"TURNSTILE_POLL_INTERVAL", "poll-interval", "5ms", "1s",
		func(c Config) any { return c.PollInterval }, 5 * time.Millisecond, time.Second,
	},
	{
		"TURNSTILE_SHUTDOWN_TIMEOUT", "shutdown-timeout", "1m", "5s",
		func(c Config) any { return c.ShutdownTimeout }, time.Minute, 5 * time.Second,
	},
	{
		"TURNSTILE_LOG_LEVEL", "log-level", "DEBUG", "error",
		func(c Config) any { return c.LogLevel }, slog.LevelDebug, slog.LevelError,
	},
	{
		"TURNSTILE_LOG_FORMAT", "log-format", "json", "text",
		func(c Config) any { return c.LogFormat }, LogFormatJSON, LogFormatText,
	},
	{
		"TURNSTILE_ADMIN_ADDR", "admin-addr", "127.0.0.1:9190", "[::1]:9191",
		func(c Config) any { return c.AdminAddr }, "127.0.0.1:9190", "[::1]:9191",
	},
	{
		"TURNSTILE_ADMIN_TOKEN", "admin-token", "env-token-0123456789", "flag-token-0123456789",
		func(c Config) any { return c.AdminToken }, "env-token-0123456789", "flag-token-0123456789",
	},
	{
		"TURNSTILE_METRICS_ADDR", "metrics-addr", "127.0.0.1:9090", ":9091",
		func(c Config) any { return c.MetricsAddr }, "127.0.0.1:9090", ":9091",
	},
}

func TestLoadConfig_EveryVariableIsTested(t *testing.T) {
	t.Parallel()

	var tested []string
	for _, s := range settings {
		tested = append(tested, s.env)
	}
	var all []string
	for _, v := range ConfigVars() {
		all = append(all, v.Env)
	}
	require.ElementsMatch(t, all, tested)
}

func TestLoadConfig_Env(t *testing.T) {
	t.Parallel()

	for _, tt := range settings {
		t.Run(tt.env, func(t *testing.T) {
			t.Parallel()

			cfg, err := LoadConfig(newFlagSet(), nil, env(map[string]string{tt.env: tt.a}))
			require.NoError(t, err)
			require.Equal(t, tt.wantA, tt.get(cfg))
			require.NotEqual(t, tt.wantA, tt.get(DefaultConfig()), "pick a value that is not the default")
		})
	}
}

func TestLoadConfig_Flag(t *testing.T) {
	t.Parallel()

	for _, tt := range settings {
		t.Run(tt.flag, func(t *testing.T) {
			t.Parallel()

			t.Run("OverridesEnv", func(t *testing.T) {
				t.Parallel()
				fs := newFlagSet()
				cfg, err := LoadConfig(fs, []string{"-" + tt.flag, tt.b, "rest"}, env(map[string]string{tt.env: tt.a}))
				require.NoError(t, err)
				require.Equal(t, tt.wantB, tt.get(cfg))
				require.Equal(t, []string{"rest"}, fs.Args())
			})
			t.Run("WithoutEnv", func(t *testing.T) {
				t.Parallel()
				cfg, err := LoadConfig(newFlagSet(), []string{"-" + tt.flag + "=" + tt.a}, env(nil))
				require.NoError(t, err)
				require.Equal(t, tt.wantA, tt.get(cfg))
			})
			t.Run("OverridesBadEnv", func(t *testing.T) {
				t.Parallel()
				// A flag replaces the variable, so the variable is not read.
				cfg, err := LoadConfig(newFlagSet(), []string{"-" + tt.flag, tt.b},
					env(map[string]string{tt.env: "://bad value"}))
				require.NoError(t, err)
				require.Equal(t, tt.wantB, tt.get(cfg))
			})
		})
	}
}

func TestLoadConfig_EmptyRedisURLFlagOverridesEnv(t *testing.T) {
	t.Parallel()

	cfg, err := LoadConfig(newFlagSet(), []string{"-redis-url="},
		env(map[string]string{"TURNSTILE_REDIS_URL": "redis://prod:6379"}))
	require.NoError(t, err)
	require.Empty(t, cfg.RedisURL)
}

func TestLoadConfig_BadValues(t *testing.T) {
	t.Parallel()

	tests := []struct {
		env, flag, value string
		reason           string // part of the error's reason
	}{
		{"TURNSTILE_REDIS_URL", "redis-url", "http://localhost:6379", `unknown scheme "http"`},
		{"TURNSTILE_REDIS_URL", "redis-url", "redis://localhost/notadb", "invalid database number"},
		{"TURNSTILE_LOCK_URLS", "lock-urls", "redis://l1,redis://l2", "a majority needs at least 3"},
		{"TURNSTILE_LOCK_URLS", "lock-urls", "redis://l1,redis://l2,redis-sentinel://s1/m", "want one server"},
		{"TURNSTILE_CONCURRENCY", "concurrency", "many", "want a whole number"},
		{"TURNSTILE_CONCURRENCY", "concurrency", "0", "at least 1"},
		{"TURNSTILE_CONCURRENCY", "concurrency", "-3", "at least 1"},
		{"TURNSTILE_QUEUES", "queues", "critical", "want name=weight"},
		{"TURNSTILE_QUEUES", "queues", "critical=x", `queue "critical": weight`},
		{"TURNSTILE_QUEUES", "queues", "critical=0", "at least 1"},
		{"TURNSTILE_QUEUES", "queues", "a=1,a=2", "listed twice"},
		{"TURNSTILE_QUEUES", "queues", "=1", "empty queue name"},
		{"TURNSTILE_QUEUES", "queues", "a=1,", "want name=weight"},
		{"TURNSTILE_LOCK_TTL", "lock-ttl", "10", "want a duration"},
		{"TURNSTILE_LOCK_TTL", "lock-ttl", "0s", "must be positive"},
		{"TURNSTILE_LOCK_TTL", "lock-ttl", "-1s", "must be positive"},
		{"TURNSTILE_LOCK_WAIT", "lock-wait", "soon", "want a duration"},
		{"TURNSTILE_LOCK_WAIT", "lock-wait", "-1ms", "must not be negative"},
		{"TURNSTILE_SHUTDOWN_TIMEOUT", "shutdown-timeout", "30", "want a duration"},
		{"TURNSTILE_SHUTDOWN_TIMEOUT", "shutdown-timeout", "0s", "must be positive"},
		{"TURNSTILE_LOG_LEVEL", "log-level", "verbose", "want debug, info, warn or error"},
		{"TURNSTILE_LOG_FORMAT", "log-format", "xml", "want text or json"},
		{"TURNSTILE_METRICS_ADDR", "metrics-addr", "9090", "want host:port"},
		{"TURNSTILE_METRICS_ADDR", "metrics-addr", "localhost:http", "port number"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Parallel()

			t.Run("Env", func(t *testing.T) {
				t.Parallel()
				_, err := LoadConfig(newFlagSet(), nil, env(map[string]string{tt.env: tt.value}))
				requireConfigError(t, err, tt.env, tt.flag, false, tt.value, tt.reason)
				require.Contains(t, err.Error(), "worker: "+tt.env+" (flag -"+tt.flag+")=")
			})
			t.Run("Flag", func(t *testing.T) {
				t.Parallel()
				_, err := LoadConfig(newFlagSet(), []string{"-" + tt.flag, tt.value}, env(nil))
				requireConfigError(t, err, tt.env, tt.flag, true, tt.value, tt.reason)
				require.Contains(t, err.Error(), "worker: flag -"+tt.flag+" ("+tt.env+")=")
			})
		})
	}
}

func requireConfigError(t *testing.T, err error, envName, flagName string, fromFlag bool, value, reason string) {
	t.Helper()
	require.Error(t, err)
	ce, ok := errors.AsType[*ConfigError](err)
	require.True(t, ok, "want a *ConfigError, got %T: %v", err, err)
	require.Equal(t, envName, ce.Env)
	require.Equal(t, flagName, ce.Flag)
	require.Equal(t, fromFlag, ce.FromFlag)
	require.Equal(t, value, ce.Value)
	msg := err.Error()
	require.Contains(t, msg, envName)
	require.Contains(t, msg, "-"+flagName)
	require.Contains(t, msg, `"`+value+`"`)
	require.Contains(t, msg, reason)
}

func TestLoadConfig_RedisURLErrorHidesPassword(t *testing.T) {
	t.Parallel()

	const secret = "hunter2-Secret"
	for _, raw := range []string{
		"http://user:" + secret + "@localhost",
		"redis://user:" + secret + "@localhost/notadb",
		"redis://user:" + secret + "@localhost:port",
		"redis://user:" + secret + "@localhost?bogus=1",
		"redis-sentinel://user:" + secret + "@h1,h2",
		"redis-cluster://user:" + secret + "@h1,h2/3",
	} {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{nil, {"-redis-url", raw}} {
				_, err := LoadConfig(newFlagSet(), args, env(map[string]string{"TURNSTILE_REDIS_URL": raw}))
				require.Error(t, err)
				require.NotContains(t, err.Error(), secret)
				require.Contains(t, err.Error(), "user:xxxxx@")
				require.Contains(t, err.Error(), "TURNSTILE_REDIS_URL")
				require.Contains(t, err.Error(), "-redis-url")
			}
		})
	}
}

func TestLoadConfig_UnknownFlag(t *testing.T) {
	t.Parallel()

	_, err := LoadConfig(newFlagSet(), []string{"-no-such-flag"}, env(nil))
	require.ErrorContains(t, err, "no-such-flag")
}

func TestConfigVars(t *testing.T) {
	t.Parallel()

	fs := newFlagSet()
	_, err := LoadConfig(fs, nil, env(nil))
	require.NoError(t, err)

	vars := ConfigVars()
	require.Len(t, vars, len(settings))
	var usage bytes.Buffer
	require.NoError(t, WriteConfigUsage(&usage))
	envs, flags := map[string]bool{}, map[string]bool{}
	for _, v := range vars {
		require.True(t, strings.HasPrefix(v.Env, "TURNSTILE_"), v.Env)
		require.False(t, envs[v.Env], "duplicate %s", v.Env)
		require.False(t, flags[v.Flag], "duplicate -%s", v.Flag)
		envs[v.Env], flags[v.Flag] = true, true
		require.NotEmpty(t, v.Default, v.Env)
		require.NotEmpty(t, v.Usage, v.Env)

		f := fs.Lookup(v.Flag)
		require.NotNil(t, f, "flag -%s not defined", v.Flag)
		require.Contains(t, f.Usage, v.Env)
		require.Contains(t, f.Usage, v.Default)
		require.Contains(t, usage.String(), v.Env+" ")
		require.Contains(t, usage.String(), "-"+v.Flag+" ")
	}
	require.True(t, strings.HasPrefix(usage.String(), "VARIABLE "))
	require.Equal(t, len(vars)+1, strings.Count(usage.String(), "\n"))
}

func TestConfig_StringAndLogValueRedact(t *testing.T) {
	t.Parallel()

	cfg := DefaultConfig()
	cfg.RedisURL = "rediss://alice:s3cr3t-pw@redis.example:6380/2"
	cfg.Queues = map[string]int{"b": 1, "a": 1, "c": 9}

	s := cfg.String()
	require.NotContains(t, s, "s3cr3t-pw")
	require.Contains(t, s, "TURNSTILE_REDIS_URL=rediss://alice:xxxxx@redis.example:6380/2")
	require.Contains(t, s, "TURNSTILE_QUEUES=c=9,a=1,b=1")
	require.Contains(t, s, "TURNSTILE_LOCK_TTL=10s")
	require.Contains(t, s, "TURNSTILE_LOG_LEVEL=info")

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", slog.Any("config", cfg))
	require.NotContains(t, buf.String(), "s3cr3t-pw")
	var rec struct {
		Config map[string]string `json:"config"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &rec))
	require.Equal(t, "rediss://alice:xxxxx@redis.example:6380/2", rec.Config["redis_url"])
	require.Equal(t, "10s", rec.Config["lock_ttl"])
}

func TestConfig_StringRoundTrips(t *testing.T) {
	t.Parallel()

	// What String prints, LoadConfig reads back to the same Config.
	want := DefaultConfig()
	want.Concurrency = 5
	want.LogLevel = slog.LevelWarn
	want.MetricsAddr = "127.0.0.1:9100"
	vars := map[string]string{}
	for kv := range strings.FieldsSeq(want.String()) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	got, err := LoadConfig(nil, nil, env(vars))
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestConfig_Validate(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		modify func(*Config)
		env    string
	}{
		{"Zero", func(c *Config) { *c = Config{} }, "TURNSTILE_CONCURRENCY"},
		{"BadURL", func(c *Config) { c.RedisURL = "redis://u:pw-123@h/x" }, "TURNSTILE_REDIS_URL"},
		{"NoQueues", func(c *Config) { c.Queues = nil }, "TURNSTILE_QUEUES"},
		{"ZeroTTL", func(c *Config) { c.LockTTL = 0 }, "TURNSTILE_LOCK_TTL"},
		{"NegativeWait", func(c *Config) { c.LockWait = -time.Second }, "TURNSTILE_LOCK_WAIT"},
		{"ZeroPoll", func(c *Config) { c.PollInterval = 0 }, "TURNSTILE_POLL_INTERVAL"},
		{"ZeroShutdown", func(c *Config) { c.ShutdownTimeout = 0 }, "TURNSTILE_SHUTDOWN_TIMEOUT"},
		{"BadFormat", func(c *Config) { c.LogFormat = "yaml" }, "TURNSTILE_LOG_FORMAT"},
		{"BadMetricsAddr", func(c *Config) { c.MetricsAddr = "nope" }, "TURNSTILE_METRICS_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			ce, ok := errors.AsType[*ConfigError](err)
			require.True(t, ok, "want a *ConfigError, got %v", err)
			require.Equal(t, tt.env, ce.Env)
			require.NotContains(t, err.Error(), "pw-123")
		})
	}
}

func TestConfig_NewLogger(t *testing.T) {
	t.Parallel()

	tests := []struct {
		format LogFormat
		level  slog.Level
		want   string
	}{
		{LogFormatJSON, slog.LevelInfo, `"msg":"shown"`},
		{LogFormatText, slog.LevelInfo, `msg=shown`},
		{LogFormatText, slog.LevelError, ``},
	}
	for _, tt := range tests {
		t.Run(string(tt.format)+tt.level.String(), func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.LogFormat, cfg.LogLevel = tt.format, tt.level
			var buf bytes.Buffer
			cfg.NewLogger(&buf).Warn("shown")
			cfg.NewLogger(&buf).Debug("hidden")
			require.NotContains(t, buf.String(), "hidden")
			if tt.want == "" {
				require.Empty(t, buf.String())
			} else {
				require.Contains(t, buf.String(), tt.want)
			}
		})
	}
}

func TestConfig_AdminTokenNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "tok-abcdefghijklmnop"
	cfg, err := LoadConfig(nil, nil, env(map[string]string{"TURNSTILE_ADMIN_TOKEN": secret}))
	require.NoError(t, err)
	require.Equal(t, secret, cfg.AdminToken)
	require.NotContains(t, cfg.String(), secret)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", slog.Any("config", cfg))
	require.NotContains(t, buf.String(), secret)
	_, err = LoadConfig(nil, nil, env(map[string]string{"TURNSTILE_ADMIN_TOKEN": "short-secret"}))
	require.ErrorContains(t, err, "TURNSTILE_ADMIN_TOKEN")
	require.NotContains(t, err.Error(), "short-secret", "a refused token is not printed either")
}
