package lock

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cohorts (Dice, Marathe and Shavit, "Lock Cohorting", 2012): the callers
// of one process that wait for the same resources line up in-process
// behind one leader, the only one of them that asks Redis. When a holder
// releases and another of them waits, the lease passes straight to it:
// no round trip, no grant to publish, the next holder starts at once.
// After Cohort passes in a row the resources go back through Redis, whose
// queue serves the other processes in arrival order.
//
// What a pass keeps safe:
//   - One holder at a time: the lock in Redis keeps its token, and the
//     holder that passes it has ended its lease (Done is closed) before
//     the next one gets it.
//   - Fences still grow from holder to holder: Redis hands out fences
//     fenceStride apart, and the i-th pass carries the leader's fence plus
//     i, so a late write of any earlier holder of the cohort is refused by
//     a store that has seen a later one, as it would be across processes.
//   - Validity is the lock's: a pass hands on the time until which the
//     lock is surely held, and a holder that gets under half its TTL of it
//     first extends the lock in Redis, which also proves it still there.
//   - A lost lease is never passed: a holder whose lease ended releases
//     through Redis, and its successor asks Redis as a leader does.

// DefaultCohort and MaxCohort bound Options.Cohort. MaxCohort keeps the
// fences of a cohort's passes below the next fence Redis hands out.
const (
	DefaultCohort = 16
	MaxCohort     = fenceStride - 1
)

// fenceStride is how far apart Redis hands out fences (acquireScript's
// bump), leaving room for the passes of one cohort in between.
const fenceStride = 64

// cohorts are a process's cohorts, one per set of resources.
type cohorts struct {
	mu   sync.Mutex
	m    map[string]*cohort
	mark uint64 // the last local wanted mark handed out
}

// cohort is the callers of one process that want one set of resources.
type cohort struct {
	key       string
	resources []Resource
	holder    *Lease // nil while the leader acquires, or between holders
	passes    int    // passes since the leader took the resources from Redis
	waiters   []chan handover
	// wanted holds, per resource name, the local mark that Locker.Want put
	// while the cohort held it, so that a pass reports it as a release
	// through Redis would.
	wanted map[string]uint64
}

// handover is a waiter's turn: a held lock to take over, or, with no
// token, the lead: the waiter asks Redis itself.
type handover struct {
	token      string
	fences     []int64 // the previous holder's
	validUntil time.Time
}

func newCohorts() *cohorts { return &cohorts{m: make(map[string]*cohort)} }

// cohortKey names a set of resources: names never contain braces.
func cohortKey(rs []Resource) string {
	if len(rs) == 1 {
		return rs[0].name
	}
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.name
	}
	return strings.Join(names, "}")
}

// cohort acquires through the process's cohort for a's resources: it
// leads when there is none, waits in line behind its holder when there is
// one, or, trying once, reports the local holder as busy without asking
// Redis. It returns the cohort the lease will belong to, if any, and
// whether the lease was passed.
func (a *acquisition) cohort(ctx context.Context) (*cohort, bool, error) {
	cs := a.l.shared.cohorts
	key := cohortKey(a.resources)
	cs.mu.Lock()
	c := cs.m[key]
	if c == nil {
		c = &cohort{key: key, resources: a.resources}
		cs.m[key] = c
		cs.mu.Unlock()
		return c, false, a.lead(ctx, c)
	}
	if a.l.opts.Wait <= 0 {
		h := c.holder
		cs.mu.Unlock()
		if h != nil && a.noteLocalHolder(h) {
			return nil, false, a.busyError(0)
		}
		// The leader is still asking Redis: so do we, outside the cohort.
		return nil, false, a.single(ctx)
	}
	turn := make(chan handover, 1)
	c.waiters = append(c.waiters, turn)
	cs.mu.Unlock()
	a.contended = time.Now()

	deadline := time.NewTimer(a.l.opts.Wait - time.Since(a.start))
	defer deadline.Stop()
	var cause error
	select {
	case h := <-turn:
		passed, err := a.take(ctx, c, h)
		return c, passed, err
	case <-ctx.Done():
		cause = context.Cause(ctx)
	case <-a.l.shared.nodes[0].hub.closed:
		cause = ErrClosed
	case <-deadline.C:
		cs.mu.Lock()
		h := c.holder
		cs.mu.Unlock()
		if h != nil {
			a.noteLocalHolder(h)
		}
		cause = a.busyError(0)
	}
	if cs.leave(c, turn) {
		return nil, false, cause
	}
	// Our turn came as we gave up: hand it on.
	a.decline(ctx, c, <-turn)
	return nil, false, cause
}

// noteLocalHolder records h as the holder a busy acquisition found, and
// reports whether it still holds.
func (a *acquisition) noteLocalHolder(h *Lease) bool {
	ttl := h.TTL()
	if ttl <= 0 {
		return false
	}
	a.holderTTL, a.holder = ttl, h.owner
	if a.contended.IsZero() {
		a.contended = time.Now()
	}
	return true
}

// lead acquires from Redis for the cohort; on failure the next waiter
// leads.
func (a *acquisition) lead(ctx context.Context, c *cohort) error {
	err := a.single(ctx)
	if err != nil {
		a.l.shared.cohorts.abdicate(c)
	}
	return err
}

// take takes over the lock a handover passes, or leads. It reports
// whether the lease was passed.
func (a *acquisition) take(ctx context.Context, c *cohort, h handover) (bool, error) {
	if h.token == "" {
		return false, a.lead(ctx, c)
	}
	leader := a.token
	a.token = h.token
	for i, f := range h.fences {
		a.fences[i] = f + 1
	}
	a.validUntil = h.validUntil
	ttl := a.l.opts.TTL
	if time.Until(a.validUntil) >= ttl/2 {
		return true, nil
	}
	sent := time.Now()
	err := a.l.shared.extend(ctx, a.lockKeys(), a.token, ttl)
	if err == nil {
		a.validUntil = validity(sent, ttl)
		return true, nil
	}
	if !errors.Is(err, ErrNotHeld) {
		// Redis did not answer: the lock may still be ours, so give it
		// back, bounded, before asking afresh.
		a.releaseDetached(ctx)
	}
	a.token, a.validUntil = leader, time.Time{}
	return false, a.lead(ctx, c)
}

// decline hands on a turn that came to a waiter that gave up.
func (a *acquisition) decline(ctx context.Context, c *cohort, h handover) {
	if h.token == "" {
		a.l.shared.cohorts.abdicate(c)
		return
	}
	next, pass, _ := a.l.shared.cohorts.pass(c, h, a.l.opts.cohort())
	if pass {
		next <- h
		return
	}
	a.token = h.token
	a.releaseDetached(ctx)
	if next != nil {
		next <- handover{}
	}
}

// releaseDetached gives back what a.token holds, on a bounded context
// detached from ctx.
func (a *acquisition) releaseDetached(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_, _ = a.l.shared.release(ctx, a.keys, a.token, "") // it expires anyway
}

// hold makes l the holder of c; a lease taken from Redis, not passed,
// starts a new run of passes.
func (cs *cohorts) hold(c *cohort, l *Lease, passed bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c.holder, l.cohort = l, c
	if !passed {
		c.passes, c.wanted = 0, nil
	}
}

// lost hands the lead of l's cohort on when l, its holder, is lost.
func (cs *cohorts) lost(l *Lease) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := l.cohort
	l.cohort = nil
	if c != nil && c.holder == l {
		cs.abdicateLocked(c)
	}
}

// abdicate passes the lead of c to its next waiter, or ends c.
func (cs *cohorts) abdicate(c *cohort) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.abdicateLocked(c)
}

func (cs *cohorts) abdicateLocked(c *cohort) {
	c.holder, c.passes, c.wanted = nil, 0, nil
	if len(c.waiters) == 0 {
		delete(cs.m, c.key)
		return
	}
	next := c.waiters[0]
	c.waiters = c.waiters[1:]
	next <- handover{}
}

// leave takes turn out of c's line; false when it was no longer there:
// its turn has been sent.
func (cs *cohorts) leave(c *cohort, turn chan handover) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	i := slices.Index(c.waiters, turn)
	if i < 0 {
		return false
	}
	c.waiters = slices.Delete(c.waiters, i, i+1)
	return true
}

// next decides what follows l, a releasing lease, in its cohort (see
// pass), and returns the lock to hand on. A lease that is no longer its
// cohort's holder (it was lost, and the lead handed on) goes back to
// Redis, with nobody to tell.
func (cs *cohorts) next(l *Lease) (next chan handover, pass bool, marks []string, h handover) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := l.cohort
	l.cohort = nil
	if c == nil || c.holder != l {
		return nil, false, nil, h
	}
	c.holder = nil
	h = handover{token: l.token, fences: l.fences}
	l.mu.Lock()
	if !l.ended {
		h.validUntil = l.validUntil
	}
	l.mu.Unlock()
	next, pass, marks = cs.passLocked(c, h, l.passes)
	return next, pass, marks, h
}

// pass decides what follows the holder of c, whose lock h describes: when
// a waiter is in line and the lock is valid and has been passed fewer
// than limit times, it passes (pass true, and marks are the local wanted
// marks to report); otherwise the lock goes back to Redis, and next, when
// not nil, leads once it has. A cohort left with nobody ends.
func (cs *cohorts) pass(c *cohort, h handover, limit int) (next chan handover, ok bool, marks []string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.passLocked(c, h, limit)
}

func (cs *cohorts) passLocked(c *cohort, h handover, limit int) (next chan handover, pass bool, marks []string) {
	if len(c.waiters) == 0 {
		delete(cs.m, c.key)
		return nil, false, nil
	}
	next = c.waiters[0]
	c.waiters = c.waiters[1:]
	if c.passes >= limit || !time.Now().Before(h.validUntil) {
		c.passes, c.wanted = 0, nil
		return next, false, nil
	}
	c.passes++
	marks = make([]string, len(c.resources))
	for i, r := range c.resources {
		if m, ok := c.wanted[r.name]; ok {
			marks[i] = localMarkPrefix + strconv.FormatUint(m, 10)
		}
	}
	return next, true, marks
}

// localMarkPrefix starts a wanted mark that a pass reports: Redis's marks
// are base32, without ':'.
const localMarkPrefix = "local:"

// want marks r wanted in every cohort of this process that holds it.
func (cs *cohorts) want(r Resource) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.m {
		if c.holder != nil && slices.Contains(c.resources, r) {
			cs.mark++
			if c.wanted == nil {
				c.wanted = make(map[string]uint64)
			}
			c.wanted[r.name] = cs.mark
		}
	}
}

// unwant clears r's local mark unless someone marked it since.
func (cs *cohorts) unwant(r Resource, mark string) {
	m, err := strconv.ParseUint(strings.TrimPrefix(mark, localMarkPrefix), 10, 64)
	if err != nil {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.m {
		if c.wanted[r.name] == m {
			delete(c.wanted, r.name)
		}
	}
}

// cohort returns how many passes in a row o allows; 0 when none.
func (o Options) cohort() int {
	switch {
	case o.Cohort < 0:
		return 0
	case o.Cohort == 0:
		return DefaultCohort
	}
	return o.Cohort
}
