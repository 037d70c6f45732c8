package lock

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"
)

// single acquires on one Redis deployment. A busy attempt queues the caller
// (when it may wait) on the first busy resource; the release that frees it
// hands it over and publishes a grant to this Locker's subscription. The
// timer below is only a fallback for a holder that expires instead of
// releasing, or for a grant lost while the subscription was down.
func (a *acquisition) single(ctx context.Context) error {
	n := a.l.shared.nodes[0]
	o := a.l.opts
	if o.Wait <= 0 {
		sent := time.Now()
		a.attempts++
		r, err := n.acquire(ctx, a.keys, a.token, o, "", false)
		if err != nil {
			// The script may have run, and taken every resource, with only
			// its reply lost (a cancelled context, a read timeout): give
			// back what the token may hold, as a cancelled wait does.
			return errors.Join(err, a.abandon(ctx, ""))
		}
		if !r.ok {
			a.noteBusy(r)
			return a.busyError(r.busy)
		}
		copy(a.fences, r.fences)
		a.validUntil = validity(sent, o.TTL)
		return nil
	}

	w, err := n.hub.register(ctx, a.token)
	if err != nil {
		return err
	}
	defer n.hub.unregister(a.token)
	entry := queueEntry(a.token, n.hub.channel, o)

	// Timers are made on the first busy reply: most acquisitions never wait.
	var deadline, retry *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
			retry.Stop()
		}
	}()

	held := 0 // resources acquired so far, a prefix of a.resources
	// since is when the first request that may have queued us on resource
	// held was sent. Whatever grant comes for it was handed over after
	// that, by a release that consumed that request's queue entry or a
	// later one; counting its validity from since is safe, while counting
	// it from the latest request is not: a waiter that was frozen after
	// being handed the lock, and whose retry went out before it read the
	// grant, would count a lock that has long run out from that retry.
	var since time.Time
	var lastErr error
	for {
		sent := time.Now()
		if since.IsZero() {
			since = sent
		}
		a.attempts++
		r, err := n.acquire(ctx, a.keys[keysPer*held:], a.token, o, n.hub.channel, a.attempts > 1)
		lastErr = err
		if err == nil {
			copy(a.fences[held:], r.fences)
			if len(r.fences) > 0 {
				a.validUntil = earliest(a.validUntil, validity(sent, o.TTL))
			}
			held += len(r.fences)
			if len(r.fences) > 0 {
				since = time.Time{}
			}
			if r.ok {
				if err := a.settle(ctx, entry); !errors.Is(err, ErrNotHeld) {
					return err
				}
				if err := a.restart(); err != nil {
					return err
				}
				held, since = 0, time.Time{}
				continue
			}
			a.noteBusy(r)
		}
		if deadline == nil {
			deadline = time.NewTimer(o.Wait - time.Since(a.start))
			retry = time.NewTimer(a.retryDelay(a.live(n, held), err))
		} else {
			retry.Reset(a.retryDelay(a.live(n, held), err))
		}
	wait:
		select {
		case g := <-w.grants:
			if held == len(a.resources) || g.lockKey != a.keys[keysPer*held] {
				break wait // stale; the retry below sorts it out
			}
			valid, ok := a.confirm(ctx, g, validity(since, o.TTL))
			if !ok {
				// Not ours any more (a grant read after the lock it gave ran
				// out), or unknown: ask again, which queues us or finds the
				// resource ours, or reports Redis's error.
				break wait
			}
			a.fences[held] = g.fence
			a.validUntil = earliest(a.validUntil, valid)
			held++
			since = time.Time{}
			if held == len(a.resources) {
				if err := a.settle(ctx, entry); !errors.Is(err, ErrNotHeld) {
					return err
				}
				if err := a.restart(); err != nil {
					return err
				}
				held, since = 0, time.Time{}
				continue
			}
		case <-w.nudge:
		case <-retry.C:
		case <-w.closed:
			return errors.Join(ErrClosed, a.abandon(ctx, entry))
		case <-ctx.Done():
			return errors.Join(context.Cause(ctx), a.abandon(ctx, entry))
		case <-deadline.C:
			if lastErr == nil {
				lastErr = a.busyError(held)
			}
			return errors.Join(lastErr, a.abandon(ctx, entry))
		}
	}
}

// live reports whether a grant for resource i, the one the caller may be
// queued on, would reach it now.
func (a *acquisition) live(n *node, i int) bool {
	if i >= len(a.resources) {
		return n.hub.live.Load()
	}
	return n.hub.liveFor(a.keys[keysPer*i], a.start.Add(a.l.opts.Wait))
}

// confirm returns the validity of a grant counted from valid, or, when
// less than half a TTL of it is left (a long wait, or a pause since the
// hand-off), proves ownership with a compare-and-pexpire and counts from
// that. ok is false when the lock the grant gave is gone, or when Redis
// did not answer.
func (a *acquisition) confirm(ctx context.Context, g grant, valid time.Time) (time.Time, bool) {
	ttl := a.l.opts.TTL
	if time.Until(valid) >= ttl/2 {
		return valid, true
	}
	sent := time.Now()
	if err := a.l.shared.extend(ctx, []string{g.lockKey}, a.token, ttl); err != nil {
		return time.Time{}, false
	}
	return validity(sent, ttl), true
}

// settle finishes a successful wait. Resources taken early in a long wait
// may have little TTL left (each counts from a request that surely came
// before Redis set it), so a lease that starts with under half its TTL is
// extended first. It returns ErrNotHeld, having given everything back,
// when one of them already ran out.
func (a *acquisition) settle(ctx context.Context, entry string) error {
	ttl := a.l.opts.TTL
	if time.Until(a.validUntil) >= ttl/2 {
		return nil
	}
	sent := time.Now()
	err := a.l.shared.extend(ctx, a.lockKeys(), a.token, ttl)
	if err != nil {
		return errors.Join(err, a.abandon(ctx, entry))
	}
	a.validUntil = validity(sent, ttl)
	return nil
}

// restart follows a settle that found a resource taken early in a long
// wait run out before the last one came (settle gave everything back):
// while the budget lasts, the acquisition starts over; after it, the
// outcome is the contention that made the wait long, a *BusyError, not a
// failure.
func (a *acquisition) restart() error {
	if time.Since(a.start) >= a.l.opts.Wait {
		return a.busyError(len(a.resources) - 1)
	}
	a.validUntil = time.Time{}
	return nil
}

// abandon leaves the queue and gives back whatever was acquired, on a
// context detached from the caller's: a cancelled wait must not keep locks.
func (a *acquisition) abandon(ctx context.Context, entry string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if _, err := a.l.shared.release(ctx, a.keys, a.token, entry); err != nil && !errors.Is(err, ErrNotHeld) {
		return err
	}
	return nil
}

func (a *acquisition) lockKeys() []string {
	ks := make([]string, len(a.resources))
	for i := range ks {
		ks[i] = a.keys[keysPer*i]
	}
	return ks
}

// retryDelay is the fallback wait before asking Redis again. While the
// subscription is live a release always reaches us, so only an expiring
// holder needs a retry: wait for its TTL. Otherwise (no subscription, or a
// Redis error) back off exponentially with jitter, capped by that TTL.
func (a *acquisition) retryDelay(live bool, err error) time.Duration {
	if live && err == nil {
		return a.holderTTL + jitter(time.Millisecond+a.holderTTL/16)
	}
	return backoff(a.attempts, a.holderTTL)
}

// backoff returns a full-jitter exponential delay for attempt n (1-based):
// up to 2ms·2^(n-1), capped at one second and, when known, by the holder's
// remaining TTL.
func backoff(n int, holderTTL time.Duration) time.Duration {
	ceiling := time.Second
	if holderTTL > 0 {
		ceiling = min(ceiling, holderTTL+time.Millisecond)
	}
	d := min(2*time.Millisecond<<min(n-1, 20), ceiling)
	return d/2 + jitter(d/2)
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d) //nolint:gosec // jitter spreads retries; it needs no unpredictability
}

// validity is the local time until which a lock set by a request sent at
// sent is surely still ours: Redis started the TTL after we sent, minus an
// allowance for clock-rate drift (Redlock's 1% + 2ms).
func validity(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - ttl/100 - 2*time.Millisecond)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func queueEntry(token, channel string, o Options) string {
	return token + "|" + channel + "|" + strconv.FormatInt(o.TTL.Milliseconds(), 10) + "|" + strconv.FormatInt(o.Wait.Milliseconds(), 10)
}
