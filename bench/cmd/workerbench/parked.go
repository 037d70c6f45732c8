package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/turnstilehq/turnstile/lock"
)

// parking is what one parked phase measured.
type parking struct {
	bytesPerTask float64 // used_memory growth per parked task, the task itself included
	inList       int64   // tasks in the parked list (the rest wait in the retry set)
	wakeRedisUS  float64 // Redis CPU µs per woken task, its run included
	wakeMS       float64 // wall ms per woken task
}

// parked parks n tasks on one key behind a task that holds it, in the
// worker's full chain, then lets the holder go and measures the first
// wakes woken tasks: the wake that follows each release must cost the same
// whatever the number parked.
func (b *bench) parked(ctx context.Context, n, wakes int) (parking, error) {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		return parking{}, err
	}
	if err := b.enqueue(ctx, []payload{{Key: hotKey, Block: true}}); err != nil {
		return parking{}, err
	}
	r := newRecorder(b.rdb, n, 0)
	srv, err := b.newServer(modeChain, r)
	if err != nil {
		return parking{}, err
	}
	r.start = time.Now()
	if err := srv.start(); err != nil {
		return parking{}, err
	}
	p, err := b.parkAndWake(ctx, r, n, wakes)
	r.letGo() // ends the holder, had the wake not run
	return p, errors.Join(err, srv.shutdown(context.WithoutCancel(ctx)))
}

func (b *bench) parkAndWake(ctx context.Context, r *recorder, n, wakes int) (parking, error) {
	select {
	case <-r.blocking:
	case <-ctx.Done():
		return parking{}, context.Cause(ctx)
	case <-time.After(phaseTimeout):
		return parking{}, errors.New("the holder never ran")
	}
	mem0, err := b.usedMemory(ctx)
	if err != nil {
		return parking{}, err
	}
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey}
	}
	if err := b.enqueue(ctx, tasks); err != nil {
		return parking{}, err
	}
	// Parked: every task was dequeued and waits in the retry set, but for
	// a few a worker may be moving right now.
	if err := waitFor(ctx, func() bool {
		pending, _ := b.rdb.LLen(ctx, "asynq:{default}:pending").Result()
		retry, _ := b.rdb.ZCard(ctx, "asynq:{default}:retry").Result()
		return pending == 0 && retry >= int64(n-b.cfg.concurrency/4)
	}); err != nil {
		return parking{}, fmt.Errorf("parking %d tasks: %w", n, err)
	}
	mem1, err := b.usedMemory(ctx)
	if err != nil {
		return parking{}, err
	}
	var p parking
	p.bytesPerTask = float64(mem1-mem0) / float64(n)
	p.inList, err = b.rdb.LLen(ctx, "asynq:{default}:turnstile:parked:"+lock.Key("bench", hotKey).String()).Result()
	if err != nil {
		return parking{}, err
	}
	wakes = min(wakes, n)
	cpu0, err := b.srv.CPU(ctx)
	if err != nil {
		return parking{}, err
	}
	t0 := time.Now()
	r.letGo()
	if err := waitFor(ctx, func() bool { return r.hot.Load() >= int64(wakes) }); err != nil {
		return parking{}, fmt.Errorf("waking %d of %d parked tasks: %w", wakes, n, err)
	}
	wall := time.Since(t0)
	cpu1, err := b.srv.CPU(ctx)
	if err != nil {
		return parking{}, err
	}
	p.wakeRedisUS = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(wakes)
	p.wakeMS = float64(wall) / float64(time.Millisecond) / float64(wakes)
	return p, nil
}

// pendingBytes is the used_memory growth per task of n tasks that merely
// wait in the pending list: what parking adds is the difference.
func (b *bench) pendingBytes(ctx context.Context, n int) (float64, error) {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		return 0, err
	}
	mem0, err := b.usedMemory(ctx)
	if err != nil {
		return 0, err
	}
	tasks := make([]payload, n)
	for i := range tasks {
		tasks[i] = payload{Key: hotKey}
	}
	if err := b.enqueue(ctx, tasks); err != nil {
		return 0, err
	}
	mem1, err := b.usedMemory(ctx)
	return float64(mem1-mem0) / float64(n), err
}

// usedMemory reads INFO memory's used_memory, in bytes.
func (b *bench) usedMemory(ctx context.Context) (int64, error) {
	info, err := b.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO memory: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("INFO memory: no used_memory")
}
