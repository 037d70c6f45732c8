package lock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Holding is a held lock as an operator sees it. It never carries the
// holder's token: that is the secret that proves ownership, and whoever
// reads it could release or extend the lease.
type Holding struct {
	// Resource is the resource's name as Resource.String prints it, e.g.
	// "order:o-1"; Holding and ForceRelease take it back.
	Resource string
	// Owner is the holder's Options.Owner, "" when it gave none.
	Owner string
	// TTL is the time left before the lock expires; zero if it has no
	// expiry, which this package never leaves.
	TTL time.Duration
	// Fence is the holder's fencing token: the resource's fence counter,
	// which is the latest fence handed out. ForceRelease takes it to make
	// sure it frees this holder and not a newer one.
	Fence int64
}

// ErrFenceMismatch reports a ForceRelease whose fence is not the current
// holder's: a newer holder has the resource.
var ErrFenceMismatch = errors.New("lock: fence does not match the holder's")

// Holdings lists held locks, a page at a time, with SCAN (never KEYS, which
// would block Redis while it walks every key): pass cursor 0 first, then the
// cursor it returned, until that is 0. count is SCAN's COUNT hint (zero or
// less: Redis's default); a page may hold fewer or more, even none before
// the end. As with SCAN, a lock held during the whole scan is reported at
// least once, and may be reported again on a later page; others may or may
// not be. Only lock keys of this Locker's Prefix are reported, never fence
// counters, waiter queues or another prefix's locks. One script after the
// SCAN reads a page's owners, TTLs and fences, so each Holding is one
// holder's, as of that moment.
//
// In quorum mode (NewQuorum) Holdings reads one node, the first in the
// order given to NewQuorum that answers; the cursor remembers that node,
// and when it stops answering the scan fails and must start again at 0.
// One node's view is not the majority's: a lock held on a minority (an
// acquisition that failed and is being given back) may show, and Fence is
// that node's counter, which may be below the lease's Fence (the largest
// among its majority).
//
// Holdings fails on a Redis Cluster client: one cursor cannot walk several
// masters, and one script cannot read keys of several slots. Holding and
// ForceRelease work there, since a resource's keys share a slot.
func (l *Locker) Holdings(ctx context.Context, cursor uint64, count int64) ([]Holding, uint64, error) {
	s := l.shared
	n := uint64(len(s.nodes))
	// The node's index rides in the cursor (cursor = node cursor × nodes +
	// index), because a node's cursor means nothing to another node. With
	// one node the cursor is the node's own.
	from, to, nodeCursor := uint64(0), n, cursor/n
	if cursor != 0 {
		from = cursor % n
		to = from + 1
	}
	var (
		page []Holding
		next uint64
	)
	err := s.firstAnswer(ctx, from, to, func(i uint64, nd *node) error {
		if _, ok := nd.client.(*redis.ClusterClient); ok {
			return errors.New("cannot scan Redis Cluster with one cursor")
		}
		keys, c, err := nd.client.Scan(ctx, nodeCursor, s.lockPattern(), count).Result()
		if err != nil {
			return err
		}
		if c > (math.MaxUint64-i)/n {
			return fmt.Errorf("cursor %d of node %d is too large to carry the node", c, i)
		}
		rs := make([]Resource, 0, len(keys))
		for _, k := range keys {
			// MATCH already keeps to our lock keys; this check makes sure
			// a key another program wrote that slipped through is not
			// taken for a resource.
			if r, ok := s.resourceOf(k); ok {
				rs = append(rs, r)
			}
		}
		seen, err := nd.inspect(ctx, s.prefix, rs)
		if err != nil {
			return err
		}
		page = make([]Holding, 0, len(rs))
		for j, in := range seen {
			if in.held { // a key may expire between SCAN and the script
				page = append(page, in.holding(rs[j]))
			}
		}
		if c != 0 {
			next = c*n + i
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("lock: holdings: %w", err)
	}
	return page, next, nil
}

// Holding returns the holder of the resource named name (as Resource.String
// prints it), or an error wrapping ErrNotHeld when nobody holds it. Owner,
// TTL and fence are read in one script, so they belong to the same holder.
// In quorum mode it reads the first node that answers, with the caveats
// given at Holdings.
func (l *Locker) Holding(ctx context.Context, name string) (Holding, error) {
	r, err := resourceNamed(name)
	if err != nil {
		return Holding{}, err
	}
	var got inspection
	err = l.shared.firstAnswer(ctx, 0, uint64(len(l.shared.nodes)), func(_ uint64, n *node) error {
		seen, err := n.inspect(ctx, l.shared.prefix, []Resource{r})
		if err != nil {
			return err
		}
		got = seen[0]
		return nil
	})
	switch {
	case err != nil:
		return Holding{}, fmt.Errorf("lock: holding %q: %w", name, err)
	case !got.held:
		return Holding{}, fmt.Errorf("lock: holding %q: %w", name, ErrNotHeld)
	}
	return got.holding(r), nil
}

// ForceRelease deletes the lock on the resource named name when its
// holder's fence is fence, and hands the resource to its next waiter as a
// release would. It returns an error wrapping ErrNotHeld when nobody holds
// it and ErrFenceMismatch when the fence differs, and changes nothing then;
// the fence check is what keeps an operator who read a Holding from freeing
// a newer holder that took the resource since. It is for operators who must
// free a resource whose holder is stuck: that holder is not told (its
// refresh, if any, finds the lock gone and ends its lease), and its next
// write is refused by the store's fence check, since the next holder's
// fence is larger.
//
// In quorum mode it runs on every node and succeeds when a majority
// released. The nodes' fence counters differ, so fence identifies the
// holder when it matches the counter of any node it holds: the lease's
// Fence, or a Holding's read from any node. A first round finds that
// holder (it must hold a majority, or the error wraps ErrNotHeld); a second
// releases it on every node, matched by a digest of its token, so a newer
// holder on some node is never touched. Should the holder lose its majority
// between the rounds, what is left of it is released and the error wraps
// ErrNotHeld.
func (l *Locker) ForceRelease(ctx context.Context, name string, fence int64) error {
	r, err := resourceNamed(name)
	if err != nil {
		return err
	}
	k := r.redisKeys(l.shared.prefix)
	keys := []string{k.lock, k.fence, k.queue}
	if len(l.shared.nodes) > 1 {
		return l.shared.forceReleaseQuorum(ctx, name, r, keys, fence)
	}
	n := l.shared.nodes[0]
	got, err := forceReleaseScript.Run(ctx, n.client, keys, "", n.receivers, strconv.FormatInt(fence, 10)).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("lock: force release %q: %w", name, err)
	case got == 0:
		return fmt.Errorf("lock: force release %q: %w", name, ErrNotHeld)
	case got < 0:
		return fmt.Errorf("lock: force release %q: %w", name, ErrFenceMismatch)
	}
	return nil
}

func (s *shared) forceReleaseQuorum(ctx context.Context, name string, r Resource, keys []string, fence int64) error {
	var (
		mu       sync.Mutex
		answered int
		errs     []error
		seen     []inspection
	)
	s.each(ctx, func(ctx context.Context, n *node) {
		in, err := n.inspect(ctx, s.prefix, []Resource{r})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		answered++
		seen = append(seen, in[0])
	})
	if answered < s.quorum {
		return fmt.Errorf("lock: force release %q: %w", name, errors.Join(errs...))
	}
	// Every node holds one value, so at most one holder has a majority.
	holds := make(map[string]int)
	for _, in := range seen {
		if in.held {
			holds[in.digest]++
		}
	}
	holder := ""
	for d, c := range holds {
		if c >= s.quorum {
			holder = d
		}
	}
	if holder == "" {
		return fmt.Errorf("lock: force release %q: %w", name, ErrNotHeld)
	}
	matched := false
	for _, in := range seen {
		if in.held && in.digest == holder && in.fence == fence {
			matched = true
		}
	}
	if !matched {
		return fmt.Errorf("lock: force release %q: %w", name, ErrFenceMismatch)
	}
	err := s.verdict(ctx, fmt.Sprintf("force release %q", name), 1, func(ctx context.Context, n *node) (int64, error) {
		return forceReleaseHolderScript.Run(ctx, n.client, keys, "", n.receivers, holder).Int64()
	})
	if errors.Is(err, ErrNotHeld) {
		// The holder expired or released between the rounds.
		return fmt.Errorf("lock: force release %q: %w", name, err)
	}
	return err
}

// firstAnswer runs fn on the nodes from index from up to to, in order,
// until one answers (fn returns nil), so that an operator's read still works
// while a quorum node is down. It returns the errors of the nodes that did
// not answer when none did.
func (s *shared) firstAnswer(ctx context.Context, from, to uint64, fn func(i uint64, n *node) error) error {
	var errs []error
	for i := from; i < to; i++ {
		err := fn(i, s.nodes[i])
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// lockPattern is the SCAN MATCH pattern of this Locker's lock keys: the
// prefix, glob-escaped so that a '*' in it is literal, then "{*}". Fence
// counters and queues end in ":fence" and ":queue", not '}', so they never
// match.
func (s *shared) lockPattern() string {
	var b strings.Builder
	for i := range len(s.prefix) {
		switch c := s.prefix[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString("{*}")
	return b.String()
}

// resourceOf returns the resource whose lock key is key, if key is one of
// this Locker's lock keys: building the key back must give key itself.
func (s *shared) resourceOf(key string) (Resource, bool) {
	name, ok := strings.CutPrefix(key, s.prefix+"{")
	if !ok {
		return Resource{}, false
	}
	name, ok = strings.CutSuffix(name, "}")
	if !ok {
		return Resource{}, false
	}
	r, err := resourceNamed(name)
	if err != nil || r.redisKeys(s.prefix).lock != key {
		return Resource{}, false
	}
	return r, true
}

// resourceNamed returns the Resource whose String is name, so that tools
// that know resources by their printed names reach the very keys Acquire
// uses. Key escapes ':' inside parts, so the kind is what precedes the
// first ':'; it escapes braces too, so a name with one was not made by Key
// and would break the key's hash tag.
func resourceNamed(name string) (Resource, error) {
	if name == "" {
		return Resource{}, errors.New("lock: empty resource name")
	}
	if strings.ContainsAny(name, "{}") {
		return Resource{}, fmt.Errorf("lock: resource name %q contains a brace", name)
	}
	kind, _, _ := strings.Cut(name, ":")
	return Resource{name: name, kindLen: len(kind)}, nil
}

// inspection is what inspectScript tells of one resource.
type inspection struct {
	held   bool
	owner  string
	ttl    time.Duration
	fence  int64
	digest string // SHA-1 of the holder's token; identifies it across nodes
}

func (in inspection) holding(r Resource) Holding {
	return Holding{Resource: r.String(), Owner: in.owner, TTL: in.ttl, Fence: in.fence}
}

// inspect reads the locks of rs in one script.
func (n *node) inspect(ctx context.Context, prefix string, rs []Resource) ([]inspection, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2*len(rs))
	for _, r := range rs {
		k := r.redisKeys(prefix)
		keys = append(keys, k.lock, k.fence)
	}
	v, err := inspectScript.Run(ctx, n.client, keys).Slice()
	if err != nil {
		return nil, err
	}
	if len(v) != len(rs) {
		return nil, fmt.Errorf("inspect: %d replies for %d resources", len(v), len(rs))
	}
	out := make([]inspection, len(rs))
	for i, r := range rs {
		if out[i], err = decodeInspection(v[i]); err != nil {
			return nil, fmt.Errorf("inspect %q: %w", r.String(), err)
		}
	}
	return out, nil
}

func decodeInspection(e any) (inspection, error) {
	f, ok := e.([]any)
	if !ok {
		return inspection{}, fmt.Errorf("unexpected reply %T", e)
	}
	if len(f) == 0 {
		return inspection{}, nil
	}
	if len(f) != 4 {
		return inspection{}, fmt.Errorf("unexpected reply of %d fields", len(f))
	}
	owner, ok1 := f[0].(string)
	pttl, ok2 := f[1].(int64)
	fence, ok3 := f[2].(string)
	digest, ok4 := f[3].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return inspection{}, fmt.Errorf("unexpected reply %v", f)
	}
	in := inspection{held: true, owner: owner, ttl: max(time.Duration(pttl), 0) * time.Millisecond, digest: digest}
	if fence != "" { // a counter someone deleted by hand; the next acquisition restarts it
		var err error
		if in.fence, err = strconv.ParseInt(fence, 10, 64); err != nil {
			return inspection{}, fmt.Errorf("fence: %w", err)
		}
	}
	return in, nil
}

// inspectScript reads what an operator may know of each resource's lock,
// atomically: the owner, never the token, leaves Redis.
//
//	KEYS[2i-1] -> lock key  KEYS[2i] -> fencing counter
//
// Returns, per resource, {} when free, else {owner, pttl ms, fence,
// digest}: owner is what follows the first ':' of the holder's token (empty
// without one), fence the counter as stored, a string, so that Lua's doubles
// cannot round it, and digest the SHA-1 of the token, which names the holder
// across quorum nodes without revealing the token.
var inspectScript = redis.NewScript(`
local out = {}
for i = 1, #KEYS / 2 do
  local lk = KEYS[2*i-1]
  local holder = redis.call('GET', lk)
  if holder then
    local owner = string.match(holder, '^[^:]*:(.*)$') or ''
    out[i] = {owner, redis.call('PTTL', lk), redis.call('GET', KEYS[2*i]) or '', redis.sha1hex(holder)}
  else
    out[i] = {}
  end
end
return out
`)

// forceReleaseScript deletes a lock whatever its token, when the fencing
// counter (the holder's fence) is ARGV[3], and hands it to the next live
// waiter. Its keys and ARGV[2] are those of the prelude; ARGV[1] is empty,
// which no token in a queue entry is, so the hand-off never mistakes a
// waiter for the caller.
//
//	KEYS[1] -> lock key  KEYS[2] -> fencing counter  KEYS[3] -> waiter queue
//	ARGV[3] -> fence, in decimal
//
// Returns 1 when released, 0 when nobody held it, -1 when the fence
// differs; only 1 changes anything.
var forceReleaseScript = redis.NewScript(prelude + `
if not redis.call('GET', KEYS[1]) then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
redis.call('DEL', KEYS[1])
handoff(KEYS[1], KEYS[2], KEYS[3])
return 1
`)

// forceReleaseHolderScript is forceReleaseScript for quorum nodes, whose
// fence counters differ: it deletes the lock when the SHA-1 of its token is
// ARGV[3], a holder found by its fence in a first round.
//
//	KEYS and ARGV[1], ARGV[2] as forceReleaseScript
//	ARGV[3] -> the holder's token digest
//
// Returns 1 when released, 0 when that holder no longer held it.
var forceReleaseHolderScript = redis.NewScript(prelude + `
local holder = redis.call('GET', KEYS[1])
if not holder or redis.sha1hex(holder) ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
handoff(KEYS[1], KEYS[2], KEYS[3])
return 1
`)
