package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// A Lease is one acquisition of one or more resources. It holds the token
// that proves ownership, so only its holder can extend or release it. Its
// methods are safe for concurrent use.
type Lease struct {
	shared    *shared
	resources []Resource
	keys      []string
	token     string
	owner     string // Options.Owner of this holder
	fences    []int64
	acquired  time.Time
	ttl       time.Duration
	maxHold   time.Duration
	// cohort is the process's cohort the lease may pass to, with up to
	// passes passes in a row; nil when it goes back to Redis. Guarded by
	// the cohorts' mutex.
	cohort *cohort
	passes int

	mu         sync.Mutex
	validUntil time.Time
	ended      bool  // released, or lost
	err        error // why it ended
	done       chan struct{}
	expiry     *time.Timer // without refresh: ends the lease at validUntil
	// With refresh: stop cancels the refresher, even mid-request, and
	// stopped is closed when it has returned.
	stop    context.CancelFunc
	stopped chan struct{}

	releaseMu sync.Mutex
	released  bool
	marks     []string // per resource, the wanted mark Release found
}

func newLease(ctx context.Context, a *acquisition) *Lease {
	l := &Lease{
		shared:     a.l.shared,
		resources:  a.resources,
		keys:       a.keys,
		token:      a.token,
		owner:      a.l.opts.Owner,
		passes:     a.l.opts.cohort(),
		fences:     a.fences,
		acquired:   time.Now(),
		ttl:        a.l.opts.TTL,
		maxHold:    a.l.opts.MaxHold,
		validUntil: a.validUntil,
		done:       make(chan struct{}),
	}
	l.startTimers(ctx, a.l.opts.Refresh, l.ttl/3)
	return l
}

// startTimers starts what ends the lease when it can no longer prove
// ownership: the refresher, first due after first, or the expiry timer.
// Called by newLease, and by a Release that failed, since the lock it
// could not delete still runs out.
func (l *Lease) startTimers(ctx context.Context, refresh bool, first time.Duration) {
	// WithoutCancel: the lease outlives the context of the call that
	// started it; Release or a lost lease stops the timers.
	ctx = context.WithoutCancel(ctx)
	if refresh {
		var rctx context.Context
		rctx, l.stop = context.WithCancel(ctx)
		l.stopped = make(chan struct{})
		go l.refresh(rctx, first, l.stopped)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.expiry != nil {
		l.expiry.Reset(time.Until(l.validUntil))
		return
	}
	l.expiry = time.AfterFunc(time.Until(l.validUntil), func() { l.lose(ctx, ErrNotHeld) })
}

// Resources returns the leased resources, sorted.
func (l *Lease) Resources() []Resource { return slices.Clone(l.resources) }

// Fence returns r's fencing token: larger than that of every earlier lease
// on r. A lease passed within a cohort (Options.Cohort) carries its
// predecessor's fence plus one; Redis hands out fences far enough apart
// that every later lease taken through Redis has a larger one still. Give it to the store with every read and write, and have the store
// refuse a token lower than the highest it has seen for r, on a read or a
// write; that makes a holder that paused past its TTL harmless (checking
// writes alone lets an older holder that read first undo a newer one's
// update). Zero if r is not leased.
func (l *Lease) Fence(r Resource) int64 {
	i, ok := slices.BinarySearchFunc(l.resources, r, func(a, b Resource) int {
		return strings.Compare(a.name, b.name)
	})
	if !ok {
		return 0
	}
	return l.fences[i]
}

// Token returns the lease's random token: the value Redis holds under each
// of its resources. Leases passed within a cohort share the token of the
// one that took the resources from Redis.
func (l *Lease) Token() string { return l.token }

// AcquiredAt returns when Acquire returned the lease.
func (l *Lease) AcquiredAt() time.Time { return l.acquired }

// TTL returns how long the lease is surely still held, measured locally
// from the last request Redis confirmed, less a drift allowance. Zero once
// the lease has ended.
func (l *Lease) TTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return 0
	}
	return max(time.Until(l.validUntil), 0)
}

// Done is closed when the lease ends: on Release, or when it can no longer
// prove ownership (its TTL passed, or a refresh failed or found it taken).
// Work guarded by the lease should stop then; Err says why.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns nil while the lease is held and ErrNotHeld (possibly joined
// with the refresher's last Redis error) once it has ended.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Extend resets the TTL of every resource to ttl (the lease's TTL if zero)
// when the lease still holds them all, and changes none otherwise. It
// returns ErrNotHeld, and ends the lease, when it does not; Redis errors
// are wrapped and leave it as it was. A ttl under a millisecond (negative
// included) is refused with an error.
func (l *Lease) Extend(ctx context.Context, ttl time.Duration) error {
	switch {
	case ttl == 0:
		ttl = l.ttl
	case ttl < time.Millisecond:
		// Redis would take PEXPIRE 0 as "delete now".
		return fmt.Errorf("lock: extend: TTL %s is under 1ms", ttl)
	}
	l.mu.Lock()
	ended := l.ended
	l.mu.Unlock()
	if ended {
		return ErrNotHeld
	}
	sent := time.Now()
	err := l.shared.extend(ctx, l.lockKeys(), l.token, ttl)
	switch {
	case err == nil:
		l.mu.Lock()
		if !l.ended {
			l.validUntil = validity(sent, ttl)
			if l.expiry != nil {
				l.expiry.Reset(time.Until(l.validUntil))
			}
		}
		l.mu.Unlock()
	case errors.Is(err, ErrNotHeld):
		l.lose(ctx, err)
	}
	return err
}

// Release gives the resources back and hands each to its next waiter. It
// runs on a context detached from ctx's cancellation, bounded by a few
// seconds, so a cancelled job still releases. It returns nil when released,
// ErrNotHeld when the lease had already lost a resource (its TTL was too
// tight), or the Redis error; after an error the lease keeps its token, so
// calling Release again retries, and an unreleased lock still expires with
// its TTL. Once Release has returned nil or ErrNotHeld, further calls do
// nothing and return nil.
func (l *Lease) Release(ctx context.Context) error {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	if l.released {
		return nil
	}
	refreshing := l.stop != nil
	stopped := l.haltTimers()
	var lead chan handover
	if cs := l.shared.cohorts; cs != nil {
		next, pass, marks, h := cs.next(l)
		if pass {
			l.released, l.marks = true, marks
			l.end(ErrNotHeld, nil)
			<-l.done
			l.shared.observer.Released(ctx, ReleaseEvent{
				Resources: l.resources, Fences: l.fences, Held: time.Since(l.acquired), Passed: true,
			})
			// The refresher, cancelled, returns by itself: its Extend of
			// the same lock is harmless, and anything it finds ends a
			// lease that has ended. The next holder need not wait for it.
			next <- h
			return nil
		}
		lead = next
	}
	if stopped != nil {
		<-stopped
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	marks, err := l.shared.release(ctx, l.keys, l.token, "")
	if lead != nil {
		lead <- handover{}
	}
	l.shared.observer.Released(ctx, ReleaseEvent{
		Resources: l.resources, Fences: l.fences, Held: time.Since(l.acquired), Err: err,
	})
	if err != nil && !errors.Is(err, ErrNotHeld) {
		// The lock is still there, ours until its TTL: keep the clock
		// running, so that Done still closes when it can run out, and keep
		// refreshing a refreshing lease, as a holder that has not released
		// expects.
		l.startTimers(ctx, refreshing, min(l.ttl/3, l.TTL()/2))
		return err
	}
	l.released, l.marks = true, marks
	l.end(ErrNotHeld, nil)
	<-l.done // closed by us, or about to be by a loss being reported
	return err
}

// Wanted returns the resources that Release found marked by Locker.Want:
// someone outside the queue waits to be told they are free. Nil before
// Release returned, or when it found no mark.
func (l *Lease) Wanted() []Resource {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	var rs []Resource
	for i, m := range l.marks {
		if m != "" {
			rs = append(rs, l.resources[i])
		}
	}
	return rs
}

// ClearWanted removes r's wanted mark, as Release found it, once whoever
// wanted r has been told: unless someone marked r again since, later
// releases no longer report it.
func (l *Lease) ClearWanted(ctx context.Context, r Resource) error {
	l.releaseMu.Lock()
	i := slices.Index(l.resources, r)
	mark := ""
	if i >= 0 && i < len(l.marks) {
		mark = l.marks[i]
	}
	l.releaseMu.Unlock()
	if mark == "" {
		return nil
	}
	if strings.HasPrefix(mark, localMarkPrefix) {
		l.shared.cohorts.unwant(r, mark)
		return nil
	}
	key := r.redisKeys(l.shared.prefix).wanted
	var (
		mu   sync.Mutex
		errs []error
	)
	l.shared.each(ctx, func(ctx context.Context, n *node) {
		if err := unwantScript.Run(ctx, n.client, []string{key}, mark).Err(); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lock: clear wanted: %w", err)
	}
	return nil
}

func (l *Lease) lockKeys() []string {
	ks := make([]string, len(l.resources))
	for i := range ks {
		ks[i] = l.keys[keysPer*i]
	}
	return ks
}

// refresh extends the lease every third of its TTL. A Redis error is
// retried until the lease's validity runs out; Done closes then, before
// Redis can expire the lock.
func (l *Lease) refresh(ctx context.Context, first time.Duration, stopped chan<- struct{}) {
	defer close(stopped)
	interval := l.ttl / 3
	next := time.NewTimer(first)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-next.C:
		}
		left := l.TTL()
		if left <= 0 {
			l.lose(ctx, ErrNotHeld)
			return
		}
		ttl := l.ttl
		if l.maxHold > 0 {
			// The last extension ends exactly at the cap; after it the
			// lease just runs out.
			ttl = min(ttl, time.Until(l.acquired.Add(l.maxHold)))
			if ttl < time.Millisecond {
				l.expire(ctx, left)
				return
			}
		}
		rctx, cancel := context.WithTimeout(ctx, left)
		err := l.Extend(rctx, ttl)
		cancel()
		switch {
		case err == nil && l.maxHold > 0:
			next.Reset(max(min(interval, time.Until(l.acquired.Add(l.maxHold))), 0))
		case err == nil:
			next.Reset(interval)
		case errors.Is(err, ErrNotHeld):
			return
		case ctx.Err() != nil:
			return
		default:
			if l.TTL() <= 0 {
				l.lose(ctx, errors.Join(ErrNotHeld, err))
				return
			}
			next.Reset(min(interval/4+jitter(interval/8), l.TTL()))
		}
	}
}

// expire ends the lease when its validity, left from now, runs out,
// unless Release comes first.
func (l *Lease) expire(ctx context.Context, left time.Duration) {
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
		l.lose(ctx, fmt.Errorf("%w: held for its MaxHold of %s", ErrNotHeld, l.maxHold))
	}
}

// haltTimers stops what startTimers started and returns a channel closed
// once the refresher, if any, has returned. Called with releaseMu held.
func (l *Lease) haltTimers() <-chan struct{} {
	l.mu.Lock()
	if l.expiry != nil {
		l.expiry.Stop()
	}
	l.mu.Unlock()
	if l.stop == nil {
		return nil
	}
	l.stop()
	stopped := l.stopped
	l.stop, l.stopped = nil, nil
	return stopped
}

// lose ends a lease that was not released, and tells the observer. The
// next waiter of its cohort, if any, asks Redis at once instead of waiting
// for a Release that would not pass the lease on.
func (l *Lease) lose(ctx context.Context, err error) {
	l.end(err, func() {
		l.shared.observer.Lost(ctx, LostEvent{
			Resources: l.resources, Fences: l.fences, Held: time.Since(l.acquired), Err: err,
		})
	})
	if cs := l.shared.cohorts; cs != nil {
		cs.lost(l)
	}
}

// end marks the lease ended, runs observe if it did, then closes Done:
// whoever wakes on Done finds the loss already counted.
func (l *Lease) end(err error, observe func()) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended, l.err = true, err
	l.mu.Unlock()
	if observe != nil {
		observe()
	}
	close(l.done)
}
