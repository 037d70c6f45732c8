package lock_test

import (
	"crypto/rand"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// baselineRelease is the minimal correct release: compare-and-delete.
var baselineRelease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// BenchmarkAcquireRelease compares an uncontended acquire+release cycle of
// this package with the minimal baseline (SET NX PX, Lua compare-and-delete)
// against the same redis-server, so their ratio is meaningful on a noisy
// machine. bench/cmd/lockbench measures contention and other libraries.
func BenchmarkAcquireRelease(b *testing.B) {
	srv := redistest.Server(b)
	rdb := srv.Client(b)
	ctx := b.Context()

	b.Run("lib=turnstile", func(b *testing.B) {
		l, err := lock.New(rdb, lock.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		key := lock.Key("bench", "turnstile")
		for b.Loop() {
			lease, err := l.Acquire(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			if err := lease.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("lib=baseline", func(b *testing.B) {
		key := "bench:baseline"
		for b.Loop() {
			token := rand.Text()
			ok, err := rdb.SetNX(ctx, key, token, lock.DefaultTTL).Result()
			if err != nil || !ok {
				b.Fatal("baseline acquire:", ok, err)
			}
			if n, err := baselineRelease.Run(ctx, rdb, []string{key}, token).Int(); err != nil || n != 1 {
				b.Fatal("baseline release:", n, err)
			}
		}
	})

	b.Run("lib=turnstile/parallel", func(b *testing.B) {
		l, err := lock.New(rdb, lock.Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		var id atomicCounter
		b.RunParallel(func(pb *testing.PB) {
			key := lock.Key("bench", id.next())
			for pb.Next() {
				lease, err := l.Acquire(ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				if err := lease.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("lib=baseline/parallel", func(b *testing.B) {
		var id atomicCounter
		b.RunParallel(func(pb *testing.PB) {
			key := "bench:baseline:" + strconv.Itoa(id.next())
			for pb.Next() {
				token := rand.Text()
				if ok, err := rdb.SetNX(ctx, key, token, lock.DefaultTTL).Result(); err != nil || !ok {
					b.Error("baseline acquire:", ok, err)
					return
				}
				if _, err := baselineRelease.Run(ctx, rdb, []string{key}, token).Int(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
