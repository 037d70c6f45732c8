// Package worker assembles a turnstile worker process: its configuration
// from the environment and flags (Config, LoadConfig) and its one shared
// Redis client (OpenRedis), embedded when no URL is given.
package worker

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// LogFormat is how log records are written.
type LogFormat string

// The log formats NewLogger writes.
const (
	LogFormatText LogFormat = "text" // slog.TextHandler: key=value, for people
	LogFormatJSON LogFormat = "json" // slog.JSONHandler: for log collectors
)

// Defaults of a Config, as DefaultConfig returns them.
const (
	DefaultLockTTL         = 10 * time.Second
	DefaultLockWait        = time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultPollInterval    = 20 * time.Millisecond
	DefaultAdminAddr       = "127.0.0.1:8090"
	DefaultQueues          = "critical=6,default=3,low=1"
)

// envRedisURL is named in the warning about embedded Redis.
const envRedisURL = "TURNSTILE_REDIS_URL"

// Config configures a worker process. Build one with LoadConfig, or start
// from DefaultConfig; the zero value is not valid (see Validate).
type Config struct {
	// RedisURL is where jobs and locks live; see ParseRedisURL for the forms.
	// Empty means an embedded in-memory Redis. It may hold a password: print
	// the Config (String, LogValue) rather than this field.
	RedisURL string
	// LockURLs, when set, are three or more independent Redis masters
	// (redis:// or rediss://) that hold the locks by majority
	// (lock.NewQuorum, Redlock) while the jobs stay on RedisURL: a lock
	// then survives the loss of a minority of them. They may hold
	// passwords, as RedisURL may.
	LockURLs []string
	// Concurrency is how many jobs run at once. Defaults to twice the CPUs,
	// because jobs mostly wait on Redis and payment gateways.
	Concurrency int
	// Queues maps queue names to priorities (weights, at least 1), as
	// asynq.Config.Queues does. Defaults to DefaultQueues.
	Queues map[string]int
	// LockTTL is the lifetime of a job's resource locks unless refreshed.
	// Kept tight so that a crashed worker blocks a resource only briefly.
	LockTTL time.Duration
	// LockWait is how long a job waits for a busy resource before handing
	// its slot back to the queue. Zero tries once.
	LockWait time.Duration
	// PollInterval is how often an idle worker looks for new tasks. It
	// bounds how soon a task woken by a release runs; each poll is one
	// short script per queue.
	PollInterval time.Duration
	// ShutdownTimeout is how long running jobs get to finish on shutdown.
	ShutdownTimeout time.Duration
	// LogLevel is the minimum level logged. Defaults to slog.LevelInfo.
	LogLevel slog.Level
	// LogFormat is LogFormatText (the default) or LogFormatJSON.
	LogFormat LogFormat
	// MetricsAddr is the host:port serving Prometheus metrics. Empty turns
	// the endpoint off.
	MetricsAddr string
	// AdminAddr is the host:port of the admin HTTP server (default
	// DefaultAdminAddr, loopback only). Empty turns it off.
	AdminAddr string
	// AdminToken guards every admin route but /healthz, /readyz and
	// /metrics; empty leaves the reads open (keep AdminAddr on loopback)
	// and refuses changes. A secret: String and LogValue hide it.
	AdminToken string
}

// DefaultConfig returns the configuration used where neither an environment
// variable nor a flag says otherwise.
func DefaultConfig() Config {
	return Config{
		Concurrency:     defaultConcurrency(),
		Queues:          map[string]int{"critical": 6, "default": 3, "low": 1}, // DefaultQueues; a test keeps them equal
		LockTTL:         DefaultLockTTL,
		LockWait:        DefaultLockWait,
		PollInterval:    DefaultPollInterval,
		AdminAddr:       DefaultAdminAddr,
		ShutdownTimeout: DefaultShutdownTimeout,
		LogLevel:        slog.LevelInfo,
		LogFormat:       LogFormatText,
	}
}

func defaultConcurrency() int { return 2 * runtime.NumCPU() }

// ConfigVar describes one setting, for --help and the README.
type ConfigVar struct {
	Env     string // environment variable, e.g. TURNSTILE_CONCURRENCY
	Flag    string // flag name without the dash, e.g. concurrency
	Default string // the default, as a person would write it
	Usage   string // what it means
}

// ConfigError reports a setting that does not parse or is out of range. It
// names both the variable and the flag, and the value as given, with any
// password in a Redis URL redacted.
type ConfigError struct {
	Env      string
	Flag     string
	FromFlag bool   // the value came from the flag, not the environment
	Value    string // redacted where it may hold a password
	Err      error
}

// Error implements error.
func (e *ConfigError) Error() string {
	src := e.Env + " (flag -" + e.Flag + ")"
	if e.FromFlag {
		src = "flag -" + e.Flag + " (" + e.Env + ")"
	}
	return fmt.Sprintf("worker: %s=%q: %v", src, e.Value, e.Err)
}

// Unwrap returns the reason.
func (e *ConfigError) Unwrap() error { return e.Err }

// configVar is a ConfigVar with the code that reads, checks and prints it.
type configVar struct {
	ConfigVar
	redact func(string) string             // hides a secret in an error; nil: not secret
	parse  func(c *Config, s string) error // syntax only
	check  func(c Config) error            // range, also for hand-built Configs
	format func(c Config) string           // the value as it would be written
}

// configVars is the single table behind LoadConfig, Validate, String,
// ConfigVars and WriteConfigUsage, so that they cannot disagree.
func configVars() []configVar {
	positive := func(d time.Duration) error {
		if d <= 0 {
			return errors.New("must be positive")
		}
		return nil
	}
	duration := func(field func(c *Config) *time.Duration) func(c *Config, s string) error {
		return func(c *Config, s string) error {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("want a duration such as 10s or 500ms: %w", err)
			}
			*field(c) = d
			return nil
		}
	}
	return []configVar{
		{
			ConfigVar: ConfigVar{
				Env: envRedisURL, Flag: "redis-url", Default: "empty: embedded in-memory Redis",
				Usage: "Redis for jobs and locks: redis://[user:pass@]host:6379/0, rediss:// (TLS), " +
					"redis-sentinel://[user:pass@]h1:26379,h2:26379/master, redis-cluster://[user:pass@]h1:6379,h2:6379",
			},
			redact: RedactRedisURL,
			parse:  func(c *Config, s string) error { c.RedisURL = s; return nil },
			check: func(c Config) error {
				_, err := parseRedisURL(c.RedisURL)
				return err
			},
			format: func(c Config) string { return RedactRedisURL(c.RedisURL) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_LOCK_URLS", Flag: "lock-urls", Default: "empty: locks on the jobs' Redis",
				Usage: "three or more independent Redis masters for the locks, comma-separated redis:// URLs; " +
					"a lock holds while a majority agrees (Redlock)",
			},
			redact: redactRedisURLs,
			parse: func(c *Config, s string) error {
				c.LockURLs = nil
				for u := range strings.SplitSeq(s, ",") {
					if u = strings.TrimSpace(u); u != "" {
						c.LockURLs = append(c.LockURLs, u)
					}
				}
				return nil
			},
			check:  checkLockURLs,
			format: func(c Config) string { return redactRedisURLs(strings.Join(c.LockURLs, ",")) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_CONCURRENCY", Flag: "concurrency", Default: "2 x CPUs",
				Usage: "jobs run at once",
			},
			parse: func(c *Config, s string) error {
				n, err := strconv.Atoi(s)
				if err != nil {
					return fmt.Errorf("want a whole number: %w", err)
				}
				c.Concurrency = n
				return nil
			},
			check: func(c Config) error {
				if c.Concurrency < 1 {
					return errors.New("must be at least 1")
				}
				return nil
			},
			format: func(c Config) string { return strconv.Itoa(c.Concurrency) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_QUEUES", Flag: "queues", Default: DefaultQueues,
				Usage: "queues and their priorities, name=weight,...",
			},
			parse: func(c *Config, s string) error {
				q, err := parseQueues(s)
				c.Queues = q
				return err
			},
			check:  func(c Config) error { return checkQueues(c.Queues) },
			format: func(c Config) string { return formatQueues(c.Queues) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_LOCK_TTL", Flag: "lock-ttl", Default: DefaultLockTTL.String(),
				Usage: "lifetime of a job's resource locks; how long a crashed worker blocks a resource",
			},
			parse:  duration(func(c *Config) *time.Duration { return &c.LockTTL }),
			check:  func(c Config) error { return positive(c.LockTTL) },
			format: func(c Config) string { return c.LockTTL.String() },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_LOCK_WAIT", Flag: "lock-wait", Default: DefaultLockWait.String(),
				Usage: "how long a job waits for a busy resource before it is retried later; 0 tries once",
			},
			parse: duration(func(c *Config) *time.Duration { return &c.LockWait }),
			check: func(c Config) error {
				if c.LockWait < 0 {
					return errors.New("must not be negative")
				}
				return nil
			},
			format: func(c Config) string { return c.LockWait.String() },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_POLL_INTERVAL", Flag: "poll-interval", Default: DefaultPollInterval.String(),
				Usage: "how often an idle worker polls its queues; how soon a task woken by a lock release runs",
			},
			parse:  duration(func(c *Config) *time.Duration { return &c.PollInterval }),
			check:  func(c Config) error { return positive(c.PollInterval) },
			format: func(c Config) string { return c.PollInterval.String() },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_SHUTDOWN_TIMEOUT", Flag: "shutdown-timeout", Default: DefaultShutdownTimeout.String(),
				Usage: "how long running jobs get to finish on shutdown",
			},
			parse:  duration(func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
			check:  func(c Config) error { return positive(c.ShutdownTimeout) },
			format: func(c Config) string { return c.ShutdownTimeout.String() },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_LOG_LEVEL", Flag: "log-level", Default: "info",
				Usage: "minimum log level: debug, info, warn or error",
			},
			parse: func(c *Config, s string) error {
				l, ok := logLevels[strings.ToLower(s)]
				if !ok {
					return errors.New("want debug, info, warn or error")
				}
				c.LogLevel = l
				return nil
			},
			check:  func(Config) error { return nil }, // every slog.Level is usable
			format: func(c Config) string { return strings.ToLower(c.LogLevel.String()) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_LOG_FORMAT", Flag: "log-format", Default: string(LogFormatText),
				Usage: "log format: text or json",
			},
			parse: func(c *Config, s string) error { c.LogFormat = LogFormat(strings.ToLower(s)); return nil },
			check: func(c Config) error {
				if c.LogFormat != LogFormatText && c.LogFormat != LogFormatJSON {
					return errors.New("want text or json")
				}
				return nil
			},
			format: func(c Config) string { return string(c.LogFormat) },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_ADMIN_ADDR", Flag: "admin-addr", Default: DefaultAdminAddr,
				Usage: "host:port of the admin HTTP server (locks, enqueue API, /metrics, health); empty: off",
			},
			parse:  func(c *Config, s string) error { c.AdminAddr = s; return nil },
			check:  func(c Config) error { return checkAddr(c.AdminAddr) },
			format: func(c Config) string { return c.AdminAddr },
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_ADMIN_TOKEN", Flag: "admin-token", Default: "empty: reads open, changes refused",
				Usage: "token for every admin route but /healthz, /readyz and /metrics (bearer, or Basic password in a browser)",
			},
			redact: func(string) string { return "***" },
			parse:  func(c *Config, s string) error { c.AdminToken = s; return nil },
			check: func(c Config) error {
				if c.AdminToken != "" && len(c.AdminToken) < 16 {
					return errors.New("want at least 16 characters")
				}
				return nil
			},
			format: func(c Config) string {
				if c.AdminToken == "" {
					return ""
				}
				return "***"
			},
		},
		{
			ConfigVar: ConfigVar{
				Env: "TURNSTILE_METRICS_ADDR", Flag: "metrics-addr", Default: "empty: off",
				Usage: "host:port serving Prometheus /metrics, e.g. 127.0.0.1:9090",
			},
			parse:  func(c *Config, s string) error { c.MetricsAddr = s; return nil },
			check:  func(c Config) error { return checkAddr(c.MetricsAddr) },
			format: func(c Config) string { return c.MetricsAddr },
		},
	}
}

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// ConfigVars returns the settings LoadConfig reads, in a stable order, so
// that --help and the README print the same list.
func ConfigVars() []ConfigVar {
	vars := configVars()
	out := make([]ConfigVar, len(vars))
	for i, v := range vars {
		out[i] = v.ConfigVar
	}
	return out
}

// WriteConfigUsage writes the table of ConfigVars to w, one setting a line.
func WriteConfigUsage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, "VARIABLE\tFLAG\tDEFAULT\tMEANING"); err != nil {
		return fmt.Errorf("worker: write config usage: %w", err)
	}
	for _, v := range ConfigVars() {
		if _, err := fmt.Fprintf(tw, "%s\t-%s\t%s\t%s\n", v.Env, v.Flag, v.Default, v.Usage); err != nil {
			return fmt.Errorf("worker: write config usage: %w", err)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("worker: write config usage: %w", err)
	}
	return nil
}

// LoadConfig defines the worker's flags on fs, parses args with it, and
// returns DefaultConfig overridden by the environment (read through getenv)
// and then by the flags given in args. A nil fs reads the environment only;
// a nil getenv reads no environment. Empty variables count as unset. The
// error for a bad value is a *ConfigError naming the variable, the flag
// and the value. fs.Args() holds the remaining arguments afterwards.
func LoadConfig(fs *flag.FlagSet, args []string, getenv func(string) string) (Config, error) {
	vars := configVars()
	flagValues := make(map[string]*string, len(vars))
	setFlags := map[string]bool{}
	if fs != nil {
		for _, v := range vars {
			// Strings, parsed below rather than by package flag, so that a bad
			// flag gets the same error as a bad variable.
			flagValues[v.Flag] = fs.String(v.Flag, "",
				fmt.Sprintf("%s (env %s, default %s)", v.Usage, v.Env, v.Default))
		}
		if err := fs.Parse(args); err != nil {
			return Config{}, fmt.Errorf("worker: parse flags: %w", err)
		}
		fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	}
	cfg := DefaultConfig()
	for _, v := range vars {
		var s string
		fromFlag := setFlags[v.Flag]
		switch {
		case fromFlag:
			// Even when empty: -redis-url= asks for embedded Redis over the
			// environment's URL.
			s = strings.TrimSpace(*flagValues[v.Flag])
		case getenv != nil:
			s = strings.TrimSpace(getenv(v.Env))
			if s == "" {
				continue
			}
		default:
			continue
		}
		err := v.parse(&cfg, s)
		if err == nil {
			err = v.check(cfg)
		}
		if err != nil {
			value := s
			if v.redact != nil {
				value = v.redact(s)
			}
			return Config{}, &ConfigError{Env: v.Env, Flag: v.Flag, FromFlag: fromFlag, Value: value, Err: err}
		}
	}
	return cfg, nil
}

// Validate reports the first setting out of range as a *ConfigError. Use it
// on a Config built by hand; LoadConfig already validates.
func (c Config) Validate() error {
	for _, v := range configVars() {
		if err := v.check(c); err != nil {
			return &ConfigError{Env: v.Env, Flag: v.Flag, Value: v.format(c), Err: err}
		}
	}
	return nil
}

// String shows every setting as a variable would set it, with the Redis
// password redacted.
func (c Config) String() string {
	vars := configVars()
	parts := make([]string, len(vars))
	for i, v := range vars {
		parts[i] = v.Env + "=" + v.format(c)
	}
	return strings.Join(parts, " ")
}

// LogValue logs the settings as a group keyed by flag name, with the Redis
// password redacted.
func (c Config) LogValue() slog.Value {
	vars := configVars()
	attrs := make([]slog.Attr, len(vars))
	for i, v := range vars {
		attrs[i] = slog.String(strings.ReplaceAll(v.Flag, "-", "_"), v.format(c))
	}
	return slog.GroupValue(attrs...)
}

// NewLogger returns a logger writing to w in c.LogFormat at c.LogLevel.
func (c Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == LogFormatJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parseQueues reads "name=weight,name=weight". Weights are required: a
// missing one is more likely a typo than a wish for weight 1.
func parseQueues(s string) (map[string]int, error) {
	q := map[string]int{}
	for item := range strings.SplitSeq(s, ",") {
		name, weight, ok := strings.Cut(strings.TrimSpace(item), "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, fmt.Errorf("queue %q: want name=weight", name)
		}
		if _, dup := q[name]; dup {
			return nil, fmt.Errorf("queue %q listed twice", name)
		}
		n, err := strconv.Atoi(strings.TrimSpace(weight))
		if err != nil {
			return nil, fmt.Errorf("queue %q: weight: %w", name, err)
		}
		q[name] = n
	}
	return q, checkQueues(q)
}

func checkQueues(q map[string]int) error {
	if len(q) == 0 {
		return errors.New("no queues")
	}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if name == "" {
			return errors.New("empty queue name")
		}
		if q[name] < 1 {
			return fmt.Errorf("queue %q: weight must be at least 1", name)
		}
	}
	return nil
}

// formatQueues writes q as parseQueues reads it, heaviest first.
func formatQueues(q map[string]int) string {
	names := slices.SortedFunc(maps.Keys(q), func(a, b string) int {
		return cmp.Or(cmp.Compare(q[b], q[a]), strings.Compare(a, b))
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(q[n])
	}
	return strings.Join(parts, ",")
}

func checkAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as 127.0.0.1:9090: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("want a port number from 0 to 65535")
	}
	return nil
}

// checkLockURLs accepts no lock URLs, or three or more single masters.
func checkLockURLs(c Config) error {
	switch n := len(c.LockURLs); {
	case n == 0:
		return nil
	case n < 3:
		return fmt.Errorf("%d lock masters: a majority needs at least 3", n)
	}
	for i, u := range c.LockURLs {
		o, err := parseRedisURL(u)
		if err != nil {
			return fmt.Errorf("lock master %d: %w", i+1, err)
		}
		if o.Mode != RedisSingle {
			return fmt.Errorf("lock master %d: want one server (redis:// or rediss://), not %s", i+1, o.Mode)
		}
	}
	return nil
}

// redactRedisURLs redacts each of comma-separated Redis URLs.
func redactRedisURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = RedactRedisURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}
