package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
)

// errGaveUp marks an acquisition that the library abandoned by its own
// policy (out of tries, or its wait budget spent) while the key was busy.
// The benchmark counts it and asks again.
var errGaveUp = errors.New("library gave up")

// A locker is one library's lock as one process sees it.
type locker interface {
	// lock returns once it holds key, with the function that releases it.
	// An error matching errGaveUp means the library stopped trying.
	lock(ctx context.Context, key string) (unlock func(context.Context) error, err error)
	close() error
}

// A library makes a locker on one process's client. Every lock it takes
// lives for ttl; wait is the budget of the libraries that are told how long
// to wait.
type library struct {
	name string
	open func(c *redis.Client, ttl, wait time.Duration) (locker, error)
	// probe marks a measuring aid: run only when named in -libs, and
	// left out of every comparison.
	probe bool
}

// pollEvery is the retry delay of the floor, the baseline and the tuned
// peers.
const pollEvery = time.Millisecond

// libraries are the contenders, in report order.
var libraries = []library{
	{"turnstile", openTurnstile, false},
	{"floor", openFloor, false},
	{"baseline", openBaseline, false},
	{"redsync", openRedsync, false},
	{"redsync-tuned", openRedsyncTuned, false},
	{"redislock", openRedislock, false},
	{"redislock-tuned", openRedislockTuned, false},
	{"mutex", openMutexProbe, true},
	{"handoff", openHandoffProbe, true},
}

// turnstile waits in its queue: a release hands the key to the next waiter.
type turnstile struct{ l *lock.Locker }

func openTurnstile(c *redis.Client, ttl, wait time.Duration) (locker, error) {
	l, err := lock.New(c, lock.Config{TTL: ttl, Wait: wait})
	if err != nil {
		return nil, err
	}
	return turnstile{l}, nil
}

func (t turnstile) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	lease, err := t.l.Acquire(ctx, lock.Key("bench", key))
	if errors.Is(err, lock.ErrNotAcquired) {
		return nil, fmt.Errorf("%w: %w", errGaveUp, err)
	}
	if err != nil {
		return nil, err
	}
	return lease.Release, nil
}

func (t turnstile) close() error { return t.l.Close() }

// redsyncLocker makes a fresh Mutex per acquisition: a Mutex remembers its
// value, so it cannot be shared between goroutines.
type redsyncLocker struct {
	rs   *redsync.Redsync
	opts []redsync.Option
}

// openRedsync keeps redsync's defaults (32 tries, 50–250 ms apart) but for
// the expiry, which is the same for every library.
func openRedsync(c *redis.Client, ttl, _ time.Duration) (locker, error) {
	return redsyncLocker{rs: redsync.New(goredis.NewPool(c)), opts: []redsync.Option{redsync.WithExpiry(ttl)}}, nil
}

// openRedsyncTuned retries every pollEvery for the whole wait budget.
func openRedsyncTuned(c *redis.Client, ttl, wait time.Duration) (locker, error) {
	return redsyncLocker{rs: redsync.New(goredis.NewPool(c)), opts: []redsync.Option{
		redsync.WithExpiry(ttl),
		redsync.WithTries(int(wait / pollEvery)),
		redsync.WithRetryDelay(pollEvery),
	}}, nil
}

func (r redsyncLocker) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	m := r.rs.NewMutex(key, r.opts...)
	err := m.LockContext(ctx)
	if _, taken := errors.AsType[*redsync.ErrTaken](err); taken || errors.Is(err, redsync.ErrFailed) {
		return nil, fmt.Errorf("%w: %w", errGaveUp, err)
	}
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		ok, err := m.UnlockContext(ctx)
		if err == nil && !ok {
			err = errors.New("redsync: unlock: not held")
		}
		return err
	}, nil
}

func (redsyncLocker) close() error { return nil }

// redislockLocker obtains with retry, under a deadline of wait when retry
// is set. A nil retry is redislock's default: one try.
type redislockLocker struct {
	c     *redislock.Client
	ttl   time.Duration
	retry redislock.RetryStrategy
	wait  time.Duration
}

func openRedislock(c *redis.Client, ttl, _ time.Duration) (locker, error) {
	return redislockLocker{c: redislock.New(c), ttl: ttl}, nil
}

// openRedislockTuned retries every pollEvery for the whole wait budget.
// LinearBackoff keeps no state, so one strategy serves every goroutine.
func openRedislockTuned(c *redis.Client, ttl, wait time.Duration) (locker, error) {
	return redislockLocker{c: redislock.New(c), ttl: ttl, retry: redislock.LinearBackoff(pollEvery), wait: wait}, nil
}

func (r redislockLocker) lock(ctx context.Context, key string) (func(context.Context) error, error) {
	var opts *redislock.Options
	obtainCtx := ctx
	if r.retry != nil {
		opts = &redislock.Options{RetryStrategy: r.retry}
		var cancel context.CancelFunc
		obtainCtx, cancel = context.WithTimeout(ctx, r.wait)
		defer cancel()
	}
	l, err := r.c.Obtain(obtainCtx, key, r.ttl, opts)
	// Obtain reports the end of its wait budget as the context's error.
	if errors.Is(err, redislock.ErrNotObtained) || (err != nil && ctx.Err() == nil && obtainCtx.Err() != nil) {
		return nil, fmt.Errorf("%w: %w", errGaveUp, err)
	}
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

func (redislockLocker) close() error { return nil }
