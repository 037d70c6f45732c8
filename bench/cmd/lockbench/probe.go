package main

import (
	"context"
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
