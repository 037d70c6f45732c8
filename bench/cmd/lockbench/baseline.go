package main

import (
	"context"
	"crypto/rand"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaseScript deletes a lock only while it still holds the caller's token.
//
//	KEYS[1] -> lock key
//	ARGV[1] -> token
//
// Returns 1 when deleted, 0 when the token no longer held the lock.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// baseline is the least a Redis lock can be: SET NX PX to take it, a
// compare-and-delete script to give it back, and a poll every pollEvery
// while it is busy. It never gives up; only ctx ends its wait.
type baseline struct {
	c   *redis.Client
	ttl time.Duration
}

func openBaseline(c *redis.Client, ttl, _ time.Duration) (locker, error) {
	return baseline{c: c, ttl: ttl}, nil
}

func (b baseline) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	token := rand.Text()
	return pollLock(ctx, "baseline", b.c, key, token, func() error {
		return b.c.Do(ctx, "SET", key, token, "NX", "PX", b.ttl.Milliseconds()).Err()
	})
}

// pollLock runs try, which returns redis.Nil while the lock is busy, every
// pollEvery until it takes the lock, and returns the compare-and-delete
// that gives it back. Only ctx ends the wait.
func pollLock(ctx context.Context, name string, c *redis.Client, key, token string, try func() error) (func(context.Context) error, error) {
	for {
		err := try()
		if err == nil {
			return func(ctx context.Context) error {
				n, err := releaseScript.Run(ctx, c, []string{key}, token).Int64()
				if err == nil && n == 0 {
					err = errors.New(name + ": unlock: not held")
				}
				return err
			}, nil
		}
		if !errors.Is(err, redis.Nil) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(pollEvery):
		}
	}
}

func (baseline) close() error { return nil }
