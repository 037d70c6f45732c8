package main

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/redis/go-redis/v9"
)

// floorAcquireScript takes a lock and bumps its fence in one round trip:
// the least any fenced lock must do. Both keys carry the lock's hash tag,
// so the script stays in one Cluster slot.
//
//	KEYS[1] -> lock key  KEYS[2] -> fence counter
//	ARGV[1] -> token     ARGV[2] -> ttl ms
//
// Returns the fence, or nil when another token holds the lock.
var floorAcquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
`)

// floor is the fenced counterpart of baseline: one script that does SET NX
// PX and INCR of a fence counter, the same compare-and-delete release, and
// a poll every pollEvery while the lock is busy. No fenced lock can take an
// uncontended lock in fewer round trips or Redis calls, so it is the
// yardstick of turnstile's uncontended cost; baseline, with no fence, is
// cheaper than any fenced lock can be.
type floor struct {
	c   *redis.Client
	ttl time.Duration
}

func openFloor(c *redis.Client, ttl, _ time.Duration) (locker, error) {
	return floor{c: c, ttl: ttl}, nil
}

func (f floor) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	token := rand.Text()
	keys := []string{"{" + key + "}", "{" + key + "}:fence"}
	return pollLock(ctx, "floor", f.c, keys[0], token, func() error {
		return floorAcquireScript.Run(ctx, f.c, keys, token, f.ttl.Milliseconds()).Err()
	})
}

func (floor) close() error { return nil }
