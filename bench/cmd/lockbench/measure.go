package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

const (
	// releaseTimeout bounds one release, which runs detached from the
	// phase's context so that a lock is given back even after ctrl-C.
	releaseTimeout = 5 * time.Second
	// freeTimeout bounds the check that a key is free after a phase.
	freeTimeout = 2 * time.Second
)

// bench measures one library: one locker per simulated process.
type bench struct {
	name    string
	srv     *redisserver.Server
	procs   *processes
	lockers []locker
}

func (b *bench) close() error {
	var errs []error
	for _, lk := range b.lockers {
		errs = append(errs, lk.close())
	}
	return errors.Join(append(errs, b.procs.close())...)
}

// phaseRun gathers one library's slices of one phase in one round.
type phaseRun struct {
	wall     time.Duration // summed over the slices
	cycles   int           // uncontended acquire+release cycles
	trips    int64         // client requests
	cpu      time.Duration // Redis CPU
	overlaps int64         // contended: times two goroutines held the key at once
	tallies  []tally       // contended: one per goroutine, over every slice
}

// uncontended runs acquire+release cycles for d on as many goroutines, each
// on its own key, and adds them to run. Goroutine i uses locker i mod
// procs. A free key must be acquired at once, so a library giving up is an
// error here.
func (b *bench) uncontended(ctx context.Context, goroutines, procs int, d time.Duration, run *phaseRun) error {
	counts := make([]int, goroutines)
	errs := make([]error, goroutines)
	trips0 := b.procs.trips.n.Load()
	cpu0, err := b.srv.CPU(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			lk, key := b.lockers[i%procs], fmt.Sprintf("%s:u%d:%d", b.name, goroutines, i)
			for time.Now().Before(end) && ctx.Err() == nil {
				unlock, err := lk.lock(ctx, key)
				if err == nil {
					err = release(ctx, unlock)
				}
				if err != nil {
					errs[i] = err
					return
				}
				counts[i]++
			}
		})
	}
	wg.Wait()
	run.wall += time.Since(start)
	run.trips += b.procs.trips.n.Load() - trips0
	cpu1, cpuErr := b.srv.CPU(ctx)
	run.cpu += cpu1 - cpu0
	if err := errors.Join(append(errs, context.Cause(ctx), cpuErr)...); err != nil {
		return fmt.Errorf("uncontended, %d goroutines: %w", goroutines, err)
	}
	for _, n := range counts {
		run.cycles += n
	}
	return nil
}

// contention is the outcome of goroutines taking turns on one key.
type contention struct {
	acquisitions int
	perSec       float64
	utilization  float64       // time the key was held, summed over holders, over wall time
	gapMean      time.Duration // from a holder's release to the next acquisition
	gapP99       time.Duration
	waitP99      time.Duration // from asking for the lock to holding it
	fairness     float64       // most / fewest acquisitions of one goroutine; +Inf if any starved
	starved      int           // goroutines that never acquired
	gaveUp       int           // times the library gave up and was asked again
	tripsPerAcq  float64       // client requests per acquisition, releases and retries included
	cpuPerAcq    time.Duration // Redis CPU per acquisition
	overlaps     int64         // times two goroutines held the key at once
}

// turns is what the goroutines of a contended phase share.
type turns struct {
	key         string
	start, end  time.Time
	hold        time.Duration
	holders     atomic.Int64
	overlaps    atomic.Int64
	lastRelease atomic.Int64 // UnixNano, taken just before a holder releases
}

// tally is one goroutine's record of a contended phase.
type tally struct {
	acquisitions int
	gaveUp       int
	held         time.Duration // holding the key, within the phase
	waits, gaps  []time.Duration
}

// contended has goroutines take turns on one key for d, each holding it for
// hold, measures the hand-offs and adds them to run. Goroutine i uses
// locker i mod procs and adds to run.tallies[i]. Only acquisitions before
// the end count; round trips and Redis CPU are read at the end, before
// waiters are cancelled. The key must be free again afterwards.
func (b *bench) contended(ctx context.Context, key string, goroutines, procs int, d, hold time.Duration, run *phaseRun) error {
	t := &turns{key: key, hold: hold}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if run.tallies == nil {
		run.tallies = make([]tally, goroutines)
	}
	errs := make([]error, goroutines)

	trips0 := b.procs.trips.n.Load()
	cpu0, err := b.srv.CPU(ctx)
	if err != nil {
		return err
	}
	t.start = time.Now()
	t.end = t.start.Add(d)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() { errs[i] = t.take(runCtx, b.lockers[i%procs], &run.tallies[i]) })
	}
	select {
	case <-time.After(time.Until(t.end)):
	case <-ctx.Done():
	}
	run.trips += b.procs.trips.n.Load() - trips0
	cpu1, cpuErr := b.srv.CPU(ctx)
	run.cpu += cpu1 - cpu0
	run.wall += d
	cancel()
	wg.Wait()
	run.overlaps += t.overlaps.Load()

	if err := errors.Join(append(errs, context.Cause(ctx), cpuErr)...); err != nil {
		return fmt.Errorf("contended, %d goroutines: %w", goroutines, err)
	}
	if err := b.free(ctx, t.key); err != nil {
		return fmt.Errorf("contended, %d goroutines: %w", goroutines, err)
	}
	return nil
}

// contention summarizes a contended phase's slices.
func (run *phaseRun) contention() contention {
	c := summarize(run.tallies, run.wall)
	c.overlaps = run.overlaps
	if c.acquisitions > 0 {
		c.tripsPerAcq = float64(run.trips) / float64(c.acquisitions)
		c.cpuPerAcq = run.cpu / time.Duration(c.acquisitions)
	}
	return c
}

// take is one goroutine of a contended phase: acquire, hold, release, until
// the end. A wait cut short by the phase's end is no error.
func (t *turns) take(ctx context.Context, lk locker, tl *tally) error {
	for {
		asked := time.Now()
		if !asked.Before(t.end) {
			return nil
		}
		unlock, err := acquire(ctx, lk, t.key, &tl.gaveUp)
		if err != nil {
			// A wait the phase's end cut short lasted at least until the
			// end: left out, a library that starves some goroutines would
			// show only the waits of those it serves.
			tl.waits = append(tl.waits, t.end.Sub(asked))
			return phaseEnded(ctx, err)
		}
		got := time.Now()
		if t.holders.Add(1) > 1 {
			t.overlaps.Add(1)
		}
		if !got.Before(t.end) {
			tl.waits = append(tl.waits, t.end.Sub(asked))
		} else {
			tl.acquisitions++
			tl.waits = append(tl.waits, got.Sub(asked))
			if r := t.lastRelease.Load(); r != 0 {
				tl.gaps = append(tl.gaps, got.Sub(time.Unix(0, r)))
			}
			time.Sleep(t.hold)
		}
		done := time.Now()
		// What the holder really held, the sleep's overshoot included, and
		// only the part inside the phase: utilization is then at most 1
		// for a lock that excludes.
		// (got is after t.start: goroutines start after it.)
		if until := done; got.Before(t.end) {
			if until.After(t.end) {
				until = t.end
			}
			tl.held += until.Sub(got)
		}
		t.holders.Add(-1)
		t.lastRelease.Store(done.UnixNano())
		if err := release(ctx, unlock); err != nil {
			return err
		}
	}
}

// phaseEnded drops err when the end of the phase cut the wait short,
// whatever error the library made of the cancellation.
func phaseEnded(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		err = nil
	}
	return err
}

// acquire asks lk for key until it holds it, counting the times the library
// gave up in gaveUp.
func acquire(ctx context.Context, lk locker, key string, gaveUp *int) (func(context.Context) error, error) {
	for {
		unlock, err := lk.lock(ctx, key)
		if !errors.Is(err, errGaveUp) || ctx.Err() != nil {
			return unlock, err
		}
		*gaveUp++
	}
}

// release runs unlock detached from ctx's cancellation, bounded in time.
func release(ctx context.Context, unlock func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := unlock(ctx); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}

// free checks that key can be acquired soon after a phase: a waiter that
// was cancelled must not have left it locked.
func (b *bench) free(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, freeTimeout)
	defer cancel()
	var gaveUp int
	unlock, err := acquire(ctx, b.lockers[0], key, &gaveUp)
	if err != nil {
		return fmt.Errorf("key %q still locked %s after the phase: %w", key, freeTimeout, err)
	}
	return release(ctx, unlock)
}

func summarize(tallies []tally, d time.Duration) contention {
	var (
		c            contention
		held         time.Duration
		waits, gaps  []time.Duration
		most, fewest = 0, math.MaxInt
	)
	for _, tl := range tallies {
		c.acquisitions += tl.acquisitions
		c.gaveUp += tl.gaveUp
		held += tl.held
		waits = append(waits, tl.waits...)
		gaps = append(gaps, tl.gaps...)
		most, fewest = max(most, tl.acquisitions), min(fewest, tl.acquisitions)
		if tl.acquisitions == 0 {
			c.starved++
		}
	}
	c.perSec = float64(c.acquisitions) / d.Seconds()
	c.utilization = held.Seconds() / d.Seconds()
	c.gapMean, c.gapP99 = mean(gaps), p99(gaps)
	c.waitP99 = p99(waits)
	c.fairness = math.Inf(1)
	if fewest > 0 {
		c.fairness = float64(most) / float64(fewest)
	}
	return c
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// p99 returns the smallest sample that at least 99% of samples do not
// exceed.
func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[int(math.Ceil(0.99*float64(len(s))))-1]
}
