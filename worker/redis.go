package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RedisMode says which kind of client a Redis URL asks for.
type RedisMode string

// The modes ParseRedisURL recognises.
const (
	// RedisEmbedded is an in-process miniredis: an empty URL. Data lives in
	// memory only and is lost when the process exits.
	RedisEmbedded RedisMode = "embedded"
	// RedisSingle is one server: redis://, rediss:// or unix://.
	RedisSingle RedisMode = "single"
	// RedisSentinel is a master found through Sentinel: redis-sentinel:// or
	// rediss-sentinel://.
	RedisSentinel RedisMode = "sentinel"
	// RedisCluster is a Redis Cluster: redis-cluster:// or rediss-cluster://.
	RedisCluster RedisMode = "cluster"
)

// Default ports for hosts written without one.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// redacted replaces every password shown to people.
const redacted = "xxxxx"

// RedisOptions is a parsed TURNSTILE_REDIS_URL: the mode and, for it, the
// go-redis options. Exactly one of Single, Failover and Cluster is set,
// except in RedisEmbedded mode where all are nil.
type RedisOptions struct {
	Mode     RedisMode
	Single   *redis.Options
	Failover *redis.FailoverOptions
	Cluster  *redis.ClusterOptions
}

// ParseRedisURL turns a TURNSTILE_REDIS_URL into go-redis options, using
// go-redis's own parsers (ParseURL, ParseFailoverURL, ParseClusterURL) so
// that every query parameter they know (dial_timeout, pool_size,
// skip_verify, ...) works here too. The forms are:
//
//	""                                          embedded miniredis, in memory only
//	redis://[user:pass@]host[:6379][/db][?opts] one server; rediss:// adds TLS
//	unix://[user:pass@]/path/redis.sock[?db=N]  one server on a unix socket
//	redis-sentinel://[user:pass@]h1[:26379],h2[:26379]/master[/db][?opts]
//	redis-cluster://[user:pass@]h1[:6379],h2[:6379][?opts]
//
// rediss-sentinel:// and rediss-cluster:// add TLS. In the sentinel form the
// user and password authenticate to the Redis master and replicas (the
// servers that hold the data); the query parameters sentinel_username and
// sentinel_password authenticate to the sentinels themselves. A cluster has
// no database number. Characters such as '@', '/', '?', '#' and ':' in a
// password must be percent-encoded. With TLS, go-redis sets the certificate
// name to the first host's for every connection (sentinels, master and
// cluster nodes alike), so certificates must carry that name.
//
// Errors never contain the password: the URL in them is redacted as
// RedactRedisURL does.
func ParseRedisURL(raw string) (RedisOptions, error) {
	opts, err := parseRedisURL(raw)
	if err != nil {
		return RedisOptions{}, fmt.Errorf("worker: redis url %s: %w", RedactRedisURL(raw), err)
	}
	return opts, nil
}

// parseRedisURL is ParseRedisURL without the URL in its errors, for callers
// that name the value themselves (ConfigError).
func parseRedisURL(raw string) (RedisOptions, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return RedisOptions{Mode: RedisEmbedded}, nil
	}
	p, err := splitRedisURL(raw)
	if err != nil {
		return RedisOptions{}, err
	}
	hosts := strings.Split(p.hosts, ",")
	switch p.scheme {
	case "redis", "rediss", "unix":
		if len(hosts) > 1 {
			return RedisOptions{}, errors.New("several hosts need redis-sentinel:// or redis-cluster://")
		}
		if _, err := url.Parse(p.scheme + "://" + p.hosts + p.rest); err != nil {
			return RedisOptions{}, safeURLError(err)
		}
		o, err := redis.ParseURL(p.scheme + "://" + p.userinfoString() + p.hosts + p.rest)
		if err != nil {
			return RedisOptions{}, err
		}
		return RedisOptions{Mode: RedisSingle, Single: o}, nil
	case "redis-sentinel", "rediss-sentinel":
		o, err := parseSentinel(p, hosts)
		if err != nil {
			return RedisOptions{}, err
		}
		return RedisOptions{Mode: RedisSentinel, Failover: o}, nil
	case "redis-cluster", "rediss-cluster":
		o, err := parseCluster(p, hosts)
		if err != nil {
			return RedisOptions{}, err
		}
		return RedisOptions{Mode: RedisCluster, Cluster: o}, nil
	default:
		return RedisOptions{}, fmt.Errorf("unknown scheme %q: want redis, rediss, unix, "+
			"redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster", p.scheme)
	}
}

// parseSentinel rewrites our sentinel form into the one go-redis's
// ParseFailoverURL reads (first sentinel as the host, the others as addr=,
// the master as master_name=, data-node credentials as username= and
// password=, sentinel credentials as the userinfo) and lets it parse that.
func parseSentinel(p redisURLParts, hosts []string) (*redis.FailoverOptions, error) {
	addrs, err := hostPorts(hosts, defaultSentinelPort)
	if err != nil {
		return nil, err
	}
	u, q, err := parseRest(p, addrs[0])
	if err != nil {
		return nil, err
	}
	var master, db string
	switch f := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' }); len(f) {
	case 0:
	case 1:
		master = f[0]
	case 2:
		master, db = f[0], f[1]
	default:
		return nil, errors.New("path must be /master or /master/db")
	}
	if master != "" && q.Has("master_name") {
		return nil, errors.New("master name given both in the path and as master_name")
	}
	if master != "" {
		q.Set("master_name", master)
	}
	if q.Get("master_name") == "" {
		return nil, errors.New("no master name: want redis-sentinel://host:26379/mymaster")
	}
	// NewFailoverClient panics on these; they need a failover cluster client,
	// which turnstile does not build.
	for _, k := range []string{"route_by_latency", "route_randomly"} {
		if q.Has(k) {
			return nil, fmt.Errorf("option %s is not supported with sentinel", k)
		}
	}
	if p.user != nil {
		if q.Has("username") || q.Has("password") {
			return nil, errors.New("credentials given both before the host and as username/password options")
		}
		if name := p.user.Username(); name != "" {
			q.Set("username", name)
		}
		if pass, ok := p.user.Password(); ok {
			q.Set("password", pass)
		}
	}
	// go-redis reads sentinel credentials only from the userinfo.
	var sentinelUser *url.Userinfo
	if q.Has("sentinel_username") || q.Has("sentinel_password") {
		if q.Has("sentinel_password") {
			sentinelUser = url.UserPassword(q.Get("sentinel_username"), q.Get("sentinel_password"))
		} else {
			sentinelUser = url.User(q.Get("sentinel_username"))
		}
		q.Del("sentinel_username")
		q.Del("sentinel_password")
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	target := url.URL{
		Scheme:   strings.TrimSuffix(p.scheme, "-sentinel"),
		User:     sentinelUser,
		Host:     addrs[0],
		RawQuery: q.Encode(),
	}
	if db != "" {
		target.Path = "/" + db
	}
	return redis.ParseFailoverURL(target.String())
}

// parseCluster rewrites our cluster form into the one go-redis's
// ParseClusterURL reads (first node as the host, the others as addr=) and
// lets it parse that.
func parseCluster(p redisURLParts, hosts []string) (*redis.ClusterOptions, error) {
	addrs, err := hostPorts(hosts, defaultRedisPort)
	if err != nil {
		return nil, err
	}
	u, q, err := parseRest(p, addrs[0])
	if err != nil {
		return nil, err
	}
	if strings.Trim(u.Path, "/") != "" {
		return nil, errors.New("a cluster has no database number: remove the path")
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	target := url.URL{
		Scheme:   strings.TrimSuffix(p.scheme, "-cluster"),
		User:     p.user,
		Host:     addrs[0],
		RawQuery: q.Encode(),
	}
	o, err := redis.ParseClusterURL(target.String())
	if err != nil {
		return nil, err
	}
	// ParseClusterURL, unlike ParseURL, leaves the TLS floor to crypto/tls;
	// state it so that all three forms agree.
	if o.TLSConfig != nil && o.TLSConfig.MinVersion == 0 {
		o.TLSConfig.MinVersion = tls.VersionTLS12
	}
	o.ClusterStateReloadInterval = ClusterStateReload
	return o, nil
}

// ClusterStateReload is how stale a Cluster client's slot map may get. A
// master that dies answers no MOVED, so go-redis learns of its replica's
// promotion only from this reload: at its default of 60 s, every command
// for the dead master's slots failed for up to a minute after the
// failover (TestLocker_OnRedisCluster). A reload is one CLUSTER SLOTS, and
// only when commands are being sent.
const ClusterStateReload = time.Second

// parseRest parses the path and query of p (with host standing in for the
// host list, which net/url cannot parse).
func parseRest(p redisURLParts, host string) (*url.URL, url.Values, error) {
	u, err := url.Parse(p.scheme + "://" + host + p.rest)
	if err != nil {
		return nil, nil, safeURLError(err)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		// No detail: the bad escape may sit inside a password.
		return nil, nil, errors.New("malformed query string")
	}
	return u, q, nil
}

// hostPorts validates a host list and gives each host its default port.
func hostPorts(hosts []string, port string) ([]string, error) {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		a, err := hostPort(h, port)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("empty host in host list")
	}
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		// No port: allowed, unless the host is an unbracketed IPv6 address,
		// whose last group we cannot tell from a port.
		host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
		if strings.Contains(host, ":") && !strings.HasPrefix(h, "[") {
			return "", fmt.Errorf("host %q: write IPv6 addresses in brackets, as [::1]:6379", h)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("host %q: invalid port", h)
	}
	if host == "" {
		return "", fmt.Errorf("host %q: empty host name", h)
	}
	return net.JoinHostPort(host, port), nil
}

// safeURLError keeps net/url's reason and drops the URL it quotes. Callers
// pass URLs without userinfo, but a url.Error's text is the whole input.
func safeURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("malformed URL: %w", ue.Err)
	}
	return fmt.Errorf("malformed URL: %w", err)
}

// redisURLParts is a Redis URL split by hand, because net/url rejects host
// lists and quotes the whole URL (password included) in its errors.
type redisURLParts struct {
	scheme string
	user   *url.Userinfo // nil when the URL has none
	hosts  string        // raw, comma-separated
	rest   string        // raw path, query and fragment
}

func (p redisURLParts) userinfoString() string {
	if p.user == nil {
		return ""
	}
	return p.user.String() + "@"
}

// splitRedisURL splits raw into its parts. The userinfo ends at the last
// '@': a password with an unescaped '/' or '?' would otherwise be taken for
// a host and path and be echoed in errors.
func splitRedisURL(raw string) (redisURLParts, error) {
	scheme, after, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return redisURLParts{}, errors.New("not a URL: want a scheme such as redis://")
	}
	p := redisURLParts{scheme: strings.ToLower(scheme)}
	if i := strings.LastIndex(after, "@"); i >= 0 {
		info := after[:i]
		after = after[i+1:]
		if strings.ContainsAny(info, "/?#@") {
			return redisURLParts{}, errors.New("user or password contains an unescaped '/', '?', '#' or '@': percent-encode it")
		}
		// Parse the userinfo alone so that a failure cannot quote anything
		// else, and report no detail, which would quote the password.
		u, err := url.Parse("redis://" + info + "@localhost")
		if err != nil || u.User == nil {
			return redisURLParts{}, errors.New("invalid characters or percent-escapes in the user or password")
		}
		p.user = u.User
	}
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	p.hosts, p.rest = after[:end], after[end:]
	return p, nil
}

// RedactRedisURL returns raw with its password, and the value of any query
// parameter whose name contains "password", replaced by "xxxxx". It works
// on malformed URLs too, so that errors about them can quote them.
func RedactRedisURL(raw string) string {
	scheme, after, ok := strings.Cut(strings.TrimSpace(raw), "://")
	if !ok {
		// Not a URL: it may be a bare password pasted by mistake.
		if raw == "" {
			return ""
		}
		return redacted
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	if i := strings.LastIndex(after, "@"); i >= 0 {
		if strings.ContainsAny(after[:i], "/?#") {
			// An '@' past the host: a password or query value with unescaped
			// characters, whose bounds cannot be told. Hide it all.
			return scheme + "://" + redacted
		}
		if user, _, hasPass := strings.Cut(after[:i], ":"); hasPass {
			b.WriteString(user + ":" + redacted)
		} else {
			b.WriteString(after[:i])
		}
		b.WriteString("@")
		after = after[i+1:]
	}
	base, query, hasQuery := strings.Cut(after, "?")
	b.WriteString(base)
	if !hasQuery {
		return b.String()
	}
	query, fragment, hasFragment := strings.Cut(query, "#")
	pairs := strings.Split(query, "&")
	for i, kv := range pairs {
		k, _, hasValue := strings.Cut(kv, "=")
		if hasValue && strings.Contains(strings.ToLower(k), "password") {
			pairs[i] = k + "=" + redacted
		}
	}
	b.WriteString("?" + strings.Join(pairs, "&"))
	if hasFragment {
		b.WriteString("#" + fragment)
	}
	return b.String()
}

// OpenRedis builds the one Redis client the worker shares (asynq, locks,
// admin) from cfg.RedisURL and pings it with ctx, so that a wrong address or
// password fails at start rather than at the first job. An empty URL starts
// an embedded miniredis on 127.0.0.1 and says loudly that its data is lost
// on exit. A real Redis whose maxmemory-policy is not noeviction gets a
// loud warning (it may evict held locks), one that will not say an info
// line; neither stops the start. The returned close func closes the client and stops any embedded
// server; it may be called more than once. On error nothing is left open.
// A nil logger discards.
func OpenRedis(ctx context.Context, cfg Config, logger *slog.Logger) (redis.UniversalClient, func() error, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts, err := ParseRedisURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	var (
		rdb redis.UniversalClient
		mr  *miniredis.Miniredis
	)
	opts.sizePool(cfg.Concurrency)
	switch opts.Mode {
	case RedisEmbedded:
		mr = miniredis.NewMiniRedis()
		// Loopback only: the embedded server has no password.
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("worker: start embedded redis: %w", err)
		}
		logger.WarnContext(ctx, "no redis url: using embedded in-memory redis, all jobs and locks are lost on exit",
			slog.String("addr", mr.Addr()), slog.String("set_env", envRedisURL))
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: poolSize(0, cfg.Concurrency)})
	case RedisSingle:
		rdb = redis.NewClient(opts.Single)
	case RedisSentinel:
		rdb = redis.NewFailoverClient(opts.Failover)
	case RedisCluster:
		rdb = redis.NewClusterClient(opts.Cluster)
	}
	closeFn := sync.OnceValue(func() error {
		err := rdb.Close()
		if mr != nil {
			mr.Close()
		}
		if err != nil {
			return fmt.Errorf("worker: close redis: %w", err)
		}
		return nil
	})
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, nil, errors.Join(
			fmt.Errorf("worker: ping redis %s: %w", RedactRedisURL(cfg.RedisURL), err), closeFn())
	}
	logger.InfoContext(ctx, "redis connected",
		slog.String("mode", string(opts.Mode)), slog.String("redis_url", RedactRedisURL(cfg.RedisURL)))
	if opts.Mode != RedisEmbedded {
		warnEviction(ctx, rdb, logger)
	}
	return rdb, closeFn, nil
}

// poolHeadroom is the connections a worker needs beside its running
// tasks: asynq's dequeue, heartbeat, forwarder, recoverer, janitor and
// syncer loops, the admin server's reads, the guard's wake-ups.
const poolHeadroom = 16

// poolSize is the pool a URL's pool_size (set, when not 0) or a worker of
// concurrency tasks needs: each running task may hold a connection while
// it talks to Redis (a blocking command, a slow script), and with go-redis's
// default of 10 per GOMAXPROCS a worker with more tasks than that made
// them queue for one (TestOpenRedis_PoolCoversConcurrency: 1.9 s).
func poolSize(set, concurrency int) int {
	if set != 0 {
		return set
	}
	return max(10*runtime.GOMAXPROCS(0), concurrency+poolHeadroom)
}

// sizePool applies poolSize to whichever client o describes.
func (o *RedisOptions) sizePool(concurrency int) {
	switch {
	case o.Single != nil:
		o.Single.PoolSize = poolSize(o.Single.PoolSize, concurrency)
	case o.Failover != nil:
		o.Failover.PoolSize = poolSize(o.Failover.PoolSize, concurrency)
	case o.Cluster != nil:
		o.Cluster.PoolSize = poolSize(o.Cluster.PoolSize, concurrency)
	}
}

// OpenLockRedis opens a client to each of cfg.LockURLs and returns them
// with a function that closes them all; none when the locks share the
// jobs' Redis. The clients neither retry a command nor redial: a quorum
// gets on without a missing master, and go-redis's retries (three, with
// five dial attempts each) made every lock operation wait 0.4-1.7 s for a
// dead one. A majority must answer a ping with ctx; the others get a
// warning.
func OpenLockRedis(ctx context.Context, cfg Config, logger *slog.Logger) ([]redis.UniversalClient, func() error, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var clients []redis.UniversalClient
	closeAll := func() error {
		var errs []error
		for _, c := range clients {
			errs = append(errs, c.Close())
		}
		return errors.Join(errs...)
	}
	var down []error
	for _, u := range cfg.LockURLs {
		opts, err := ParseRedisURL(u)
		if err != nil {
			return nil, nil, errors.Join(err, closeAll())
		}
		if opts.Mode != RedisSingle {
			return nil, nil, errors.Join(fmt.Errorf("worker: lock master %s is not one server", RedactRedisURL(u)), closeAll())
		}
		opts.Single.MaxRetries, opts.Single.DialerRetries = -1, 1
		rdb := redis.NewClient(opts.Single)
		clients = append(clients, rdb)
		if err := rdb.Ping(ctx).Err(); err != nil {
			down = append(down, fmt.Errorf("lock master %s: %w", RedactRedisURL(u), err))
			logger.WarnContext(ctx, "lock master does not answer; the locks need a majority",
				slog.String("redis_url", RedactRedisURL(u)), slog.Any("error", err))
			continue
		}
		warnEviction(ctx, rdb, logger)
	}
	if len(clients) > 0 && len(clients)-len(down) < len(clients)/2+1 {
		return nil, nil, errors.Join(fmt.Errorf("worker: fewer than a majority of %d lock masters answer: %w",
			len(clients), errors.Join(down...)), closeAll())
	}
	if len(clients) > 0 {
		logger.InfoContext(ctx, "lock masters connected", slog.Int("masters", len(clients)), slog.Int("down", len(down)))
	}
	return clients, closeAll, nil
}
