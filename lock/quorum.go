package lock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// quorum acquires on a majority of independent masters (Redlock): try all
// at once, keep the lease when a majority agreed within its TTL, otherwise
// give back what was taken and retry with backoff until the wait budget
// ends. Like the single-node path, it uses the whole budget: it sleeps at
// most until the deadline and tries once more there, so a holder that
// releases just before the deadline is not missed.
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
		left := time.Until(deadline)
		if o.Wait <= 0 || left <= 0 {
			return err
		}
		t := time.NewTimer(min(backoff(a.attempts/len(s.nodes), a.holderTTL), left))
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}

// quorumOnce tries every node once. A lease's fence for a resource is the
// largest that the nodes it won handed out, and it is written back to
// those nodes before the lease is returned; see raiseFences for why.
func (a *acquisition) quorumOnce(ctx context.Context) error {
	s, o := a.l.shared, a.l.opts
	// A node that does not answer quickly must not eat the lease's validity.
	nodeTimeout := min(o.TTL/10, time.Second)
	nctx, cancel := context.WithTimeout(ctx, nodeTimeout)
	defer cancel()
	var (
		mu      sync.Mutex
		won     = make(map[*node][]int64, len(s.nodes))
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
			won[n] = r.fences
			for i, f := range r.fences {
				fences[i] = max(fences[i], f)
			}
		default:
			busy = r.busy
			a.noteBusy(r)
		}
	})
	valid := validity(sent, o.TTL)
	if len(won) >= s.quorum && time.Now().Before(valid) {
		wctx, cancel := context.WithTimeout(ctx, nodeTimeout)
		defer cancel()
		raised, errs := a.raiseFences(wctx, won, fences)
		nodeErr = append(nodeErr, errs...)
		if raised >= s.quorum && time.Now().Before(valid) {
			a.fences, a.validUntil = fences, valid
			return nil
		}
	}
	if err := a.abandon(ctx, ""); err != nil {
		nodeErr = append(nodeErr, err)
	}
	if busy >= 0 || len(nodeErr) == 0 {
		return a.busyError(max(busy, 0))
	}
	return errors.Join(nodeErr...)
}

// raiseFences makes every node won carry the lease's fences, and returns
// how many nodes do, while the lease still holds them there.
//
// A node's own fence may be below the lease's, which is the largest among
// the nodes won: counters drift apart because an attempt that wins only a
// minority bumps the counters it won, and a node that lost its data starts
// over from its clock. Were the fence not written back, a later lease
// could win a majority of nodes whose counters are all behind, and get a
// smaller fence than this one: the store would then refuse the later
// holder's writes and accept this one's late ones.
//
// With the write-back, fences grow in lock order. Two leases that were
// both returned each had a majority of nodes carry their fence, so those
// majorities share a node; the lease that held it first raised its
// counter to its fence while it still held the lock there, and the other
// took the lock only once it was free, so its INCR on that node, and its
// fence (the largest of its nodes'), is larger. That needs the counter
// raised while the lease holds the node's lock, which the script checks,
// and a majority of such nodes, which a node whose write-back failed (or
// found the lock gone) does not count towards.
//
// A node that handed out the lease's fence already carries it: its INCR
// ran in the script that took its lock. Once the counters agree, and they
// do after any acquisition that won every node, no node needs the extra
// round trip.
func (a *acquisition) raiseFences(ctx context.Context, won map[*node][]int64, fences []int64) (int, []error) {
	var (
		mu      sync.Mutex
		raised  int // by the script, counted under mu
		already int // nodes that need no write-back
		errs    []error
		wg      sync.WaitGroup
	)
	for n, got := range won {
		var keys []string
		var args []any
		for i, f := range got {
			if f < fences[i] {
				keys = append(keys, a.keys[keysPer*i], a.keys[keysPer*i+1])
				args = append(args, strconv.FormatInt(fences[i], 10))
			}
		}
		if len(keys) == 0 {
			already++
			continue
		}
		wg.Go(func() {
			ok, err := n.raiseFences(ctx, keys, a.token, args)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case ok:
				raised++
			}
		})
	}
	wg.Wait()
	return already + raised, errs
}

// raiseFences runs raiseFenceScript on each run of keys that share a
// Cluster slot, and reports whether every run found the locks held.
// fences[i] is for keys[2i] and keys[2i+1].
func (n *node) raiseFences(ctx context.Context, keys []string, token string, fences []any) (bool, error) {
	done := 0 // resources of the runs before
	for _, run := range n.runs(keys, 2) {
		per := len(run) / 2
		args := append([]any{token}, fences[done:done+per]...)
		v, err := n.pipe.Run(ctx, raiseFenceScript, run, args...).Int()
		if err != nil {
			return false, fmt.Errorf("lock: raise fence: %w", err)
		}
		if v != 1 {
			return false, nil
		}
		done += per
	}
	return true, nil
}

// raiseFenceScript sets fence counters to at least the given fences, while
// the token holds every lock, for quorum mode.
//
//	KEYS[2i-1] -> lock key  KEYS[2i] -> its fencing counter
//	ARGV[1] -> token        ARGV[i+1] -> the fence counter i must reach
//
// Returns 1, or 0 (and changes nothing) when the token no longer holds
// one of the locks.
var raiseFenceScript = redis.NewScript(`
for i = 1, #KEYS / 2 do
  if redis.call('GET', KEYS[2*i-1]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS / 2 do
  local fk, f = KEYS[2*i], ARGV[i+1]
  if (tonumber(redis.call('GET', fk)) or 0) < tonumber(f) then
    redis.call('SET', fk, f, 'PX', ` + fenceRetentionMS + `)
  end
end
return 1
`)
