package lock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// quorum acquires on a majority of independent masters (Redlock): try all
// at once, keep the lease when a majority agreed within its TTL, otherwise
// give back what was taken and retry with backoff until the wait budget
// ends.
func (a *acquisition) quorum(ctx context.Context) error {
	s, o := a.l.shared, a.l.opts
	deadline := a.start.Add(o.Wait)
	for {
		err := a.quorumOnce(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		delay := backoff(a.attempts/len(s.nodes), a.holderTTL)
		if o.Wait <= 0 || time.Now().Add(delay).After(deadline) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

func (a *acquisition) quorumOnce(ctx context.Context) error {
	s, o := a.l.shared, a.l.opts
	// A node that does not answer quickly must not eat the lease's validity.
	nctx, cancel := context.WithTimeout(ctx, min(o.TTL/10, time.Second))
	defer cancel()
	var (
		mu      sync.Mutex
		won     int
		busy    = -1
		nodeErr []error
		fences  = make([]int64, len(a.resources))
	)
	sent := time.Now()
	s.each(nctx, func(ctx context.Context, n *node) {
		r, err := n.acquire(ctx, a.keys, a.token, Options{TTL: o.TTL}, "", false)
		mu.Lock()
		defer mu.Unlock()
		a.attempts++
		switch {
		case err != nil:
			nodeErr = append(nodeErr, err)
		case r.ok:
			won++
			for i, f := range r.fences {
				fences[i] = max(fences[i], f)
			}
		default:
			busy = r.busy
			a.noteBusy(r)
		}
	})
	valid := validity(sent, o.TTL)
	if won >= s.quorum && time.Now().Before(valid) {
		a.fences, a.validUntil = fences, valid
		return nil
	}
	if err := a.abandon(ctx, ""); err != nil {
		nodeErr = append(nodeErr, err)
	}
	if busy >= 0 || len(nodeErr) == 0 {
		return a.busyError(max(busy, 0))
	}
	return errors.Join(nodeErr...)
}
