package lock

import (
	"context"
	"time"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// On Redis Cluster a script may only touch keys of one hash slot. Each
// resource's keys share its slot (the hash tag {name}), but the resources
// of one Acquire usually do not: the node functions below split their keys
// into runs of consecutive resources that share a slot and send one script
// per run, in order. Resources are sorted by name, so every caller takes
// them in the same order and waiters cannot deadlock; a run that finds a
// resource busy stops the acquisition there, as the script does within a
// run. On one Redis (sharded unset) every call is one run, one script.

// runs splits keys, per keys to a resource, into runs of consecutive
// resources whose keys share a Cluster slot.
func (n *node) runs(keys []string, per int) [][]string {
	if !n.sharded || len(keys) <= per {
		return [][]string{keys}
	}
	var out [][]string
	start, slot := 0, keyslot.Of(keys[0])
	for i := per; i < len(keys); i += per {
		if s := keyslot.Of(keys[i]); s != slot {
			out = append(out, keys[start:i])
			start, slot = i, s
		}
	}
	return append(out, keys[start:])
}

// acquire runs acquireScript on each run of keys until one finds a
// resource busy. Trying once (o.Wait zero) is all or none: the runs taken
// before the busy one are released. Waiting keeps them, as the script keeps
// the free prefix of one run: the caller holds a prefix of its resources
// and is queued on the first busy one.
func (n *node) acquire(ctx context.Context, keys []string, token string, o Options, channel string, queued bool) (acquireReply, error) {
	runs := n.runs(keys, keysPer)
	if len(runs) == 1 {
		return n.acquireRun(ctx, keys, token, o, channel, queued)
	}
	var out acquireReply
	taken := 0 // keys of the runs taken
	for _, run := range runs {
		r, err := n.acquireRun(ctx, run, token, o, channel, queued)
		if err != nil {
			// What the runs before took is the caller's to give back, as
			// after any failed script: it abandons, or retries and finds
			// them its own.
			return acquireReply{}, err
		}
		out.fences = append(out.fences, r.fences...)
		if !r.ok {
			out.busy, out.pttl, out.owner = taken/keysPer+r.busy, r.pttl, r.owner
			if o.Wait <= 0 && taken > 0 {
				if _, _, err := n.release(ctx, keys[:taken], token, ""); err != nil {
					return acquireReply{}, err
				}
				out.fences = nil
			}
			return out, nil
		}
		taken += len(run)
	}
	out.ok = true
	return out, nil
}

// release runs releaseScript on each run of keys and adds up what they
// found.
func (n *node) release(ctx context.Context, keys []string, token, entry string) (released int64, marks []string, err error) {
	for _, run := range n.runs(keys, keysPer) {
		r, m, err := n.releaseRun(ctx, run, token, entry)
		if err != nil {
			return 0, nil, err
		}
		released += r
		marks = append(marks, m...)
	}
	return released, marks, nil
}

// extend runs extendScript on each run of lock keys, stopping at the first
// that finds one not held. Each run is all or none; across runs (Cluster
// only) the runs before it keep their new TTL, and the lease, which ends
// with ErrNotHeld, gives them back on Release.
func (n *node) extend(ctx context.Context, lockKeys []string, token string, ttl time.Duration) (int64, error) {
	var extended int64
	for _, run := range n.runs(lockKeys, 1) {
		got, err := n.pipe.Run(ctx, extendScript, run, token, ttl.Milliseconds()).Int64()
		if err != nil {
			return 0, err
		}
		extended += got
		if got < int64(len(run)) {
			break
		}
	}
	return extended, nil
}
