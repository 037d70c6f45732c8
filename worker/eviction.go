package worker

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// evictionCheckTimeout bounds the start-up's CONFIG GET per node: a check
// that only warns must not hold up the start.
const evictionCheckTimeout = 3 * time.Second

// warnEviction asks every master behind rdb for its maxmemory-policy and
// logs a warning for each one that may evict keys. It never fails: a
// Redis that forbids or renames CONFIG (managed Redis often does) gets
// one info line asking the operator to check by hand.
//
// Only noeviction is safe. When memory runs out it makes writes fail, so
// an acquire returns an error and nothing is lost. Any other policy
// removes keys to make room: a volatile-* policy picks among keys with a
// TTL, which include every held lock, so another worker takes a lock its
// holder still works under, before the TTL the holder counts on; an
// allkeys-* policy may also take fence counters, wait queues and asynq's
// tasks and queues.
func warnEviction(ctx context.Context, rdb redis.UniversalClient, logger *slog.Logger) {
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		// ForEachMaster's error is the first node's that failed; each node
		// has already logged its own outcome.
		_ = c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			checkEviction(ctx, node, node.Options().Addr, logger)
			return nil
		})
	case *redis.Client:
		// For Sentinel this is the current master; a replica promoted
		// later is not checked until the next start.
		checkEviction(ctx, c, c.Options().Addr, logger)
	default:
		checkEviction(ctx, rdb, "", logger)
	}
}

// checkEviction is warnEviction for one node, named addr in the log.
func checkEviction(ctx context.Context, c redis.Cmdable, addr string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, evictionCheckTimeout)
	defer cancel()
	// One pattern rather than two names: CONFIG GET takes several names
	// only since Redis 7.
	cfg, err := c.ConfigGet(ctx, "maxmemory*").Result()
	policy, ok := cfg["maxmemory-policy"]
	if err != nil || !ok {
		logger.InfoContext(ctx, "cannot read maxmemory-policy (CONFIG disabled, renamed or not permitted): make sure it is noeviction, or Redis may evict held locks and fence counters",
			slog.String("addr", addr), slog.Any("error", err))
		return
	}
	if policy == "noeviction" {
		return
	}
	risk := "held locks (they carry a TTL) can be evicted while their holder works: another worker then takes the lock too"
	if strings.HasPrefix(policy, "allkeys-") {
		risk = "any key can be evicted: held locks (another worker then takes the lock too), fence counters, wait queues, and asynq's tasks and queues"
	}
	logger.WarnContext(ctx, "REDIS MAY EVICT KEYS: maxmemory-policy is not noeviction; set it to noeviction on every Redis that turnstile uses",
		slog.String("addr", addr), slog.String("maxmemory_policy", policy),
		slog.String("maxmemory", cfg["maxmemory"]), slog.String("risk", risk))
}
