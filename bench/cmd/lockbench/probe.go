package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// mutexes are the mutex probe's locks, one per key, shared by every
// simulated process so that they exclude each other as Redis locks do.
var mutexes sync.Map // key -> *sync.Mutex

// mutexProbe is no Redis lock: a sync.Mutex per key. Run with -libs
// mutex,..., it measures what the harness itself costs: the utilization,
// gap and wait that are left once no round trip is made, the ceiling of
// any Redis lock on this machine. It is left out of the default libraries
// and of every comparison.
type mutexProbe struct{}

func openMutexProbe(*redis.Client, time.Duration, time.Duration) (locker, error) {
	return mutexProbe{}, nil
}

func (mutexProbe) lock(_ context.Context, key string) (func(context.Context) error, error) {
	m, _ := mutexes.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return func(context.Context) error { mu.Unlock(); return nil }, nil
}

func (mutexProbe) close() error { return nil }

// handoffProbe is no safe lock either (no TTL, no fence, no owner check):
// the key is a Redis list holding one token, taken with BLPOP and given
// back with LPUSH. Redis serves blocked clients first come first served
// and pushes the token to the first waiter as part of the LPUSH, so a
// hand-off costs the releaser one round trip and the waiter half of one,
// with no notification or retry of its own: the floor of the gap between
// holders of any lock that Redis hands on. Run it with -libs handoff,...;
// it is left out of the default libraries and of every comparison. Its
// requests go through a pool of its own, which the round-trip count does
// not see.
type handoffProbe struct {
	c      *redis.Client // a pool with a connection for every blocked waiter
	inited sync.Map      // keys this process has seen initialized
}

// handoffPoll bounds one BLPOP, so that a waiter sees its context end.
const handoffPoll = 100 * time.Millisecond

// handoffInitScript puts the one token in a key's list, once.
//
//	KEYS[1] -> token list  KEYS[2] -> initialized mark
var handoffInitScript = redis.NewScript(`
if redis.call('SET', KEYS[2], '1', 'NX') then
  redis.call('LPUSH', KEYS[1], 't')
end
return 1
`)

func openHandoffProbe(c *redis.Client, _, _ time.Duration) (locker, error) {
	opts := c.Options()
	opts.PoolSize = 2 * (contendedMany + uncontendedMany)
	return &handoffProbe{c: redis.NewClient(opts)}, nil
}

func (h *handoffProbe) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	list := "{" + key + "}"
	if _, ok := h.inited.Load(key); !ok {
		if err := handoffInitScript.Run(ctx, h.c, []string{list, list + ":init"}).Err(); err != nil {
			return nil, err
		}
		h.inited.Store(key, true)
	}
	for {
		err := h.c.BLPop(ctx, handoffPoll, list).Err()
		if err == nil {
			return func(ctx context.Context) error { return h.c.LPush(ctx, list, "t").Err() }, nil
		}
		if !errors.Is(err, redis.Nil) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
	}
}

func (h *handoffProbe) close() error { return h.c.Close() }
