package lock

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/autopipe"
)

// Defaults for a zero Config.
const (
	DefaultTTL    = 30 * time.Second
	DefaultPrefix = "turnstile:lock:"
)

// releaseTimeout bounds a release or an abandoned wait, which run on a
// context detached from the caller's.
const releaseTimeout = 5 * time.Second

// Config configures a Locker. The zero value is usable.
type Config struct {
	// TTL is a lease's lifetime unless refreshed. Defaults to DefaultTTL.
	TTL time.Duration
	// Wait is how long Acquire waits for busy resources. Zero tries once.
	Wait time.Duration
	// Refresh makes each lease extend itself at a third of its TTL until
	// Release; see Lease.Done.
	Refresh bool
	// Prefix starts every Redis key and channel the Locker uses. It must not
	// contain '{', '}' or '|'. Defaults to DefaultPrefix.
	Prefix string
	// Cohort is Options.Cohort for Acquire on this Locker.
	Cohort int
	// Observer is told about acquisitions, releases and lost leases.
	Observer Observer
}

// Options are the per-acquisition settings of a Locker, changed with
// Locker.With. Zero values mean what they mean in Config.
type Options struct {
	TTL     time.Duration
	Wait    time.Duration
	Refresh bool
	// MaxHold caps a refreshing lease: once it has been held this long it
	// stops extending itself and ends when its TTL runs out, so work that
	// ignores cancellation cannot keep a resource forever. Zero means no
	// cap.
	MaxHold time.Duration
	// Owner describes the holder to people: a task type and ID, a host. It
	// is stored with the lock, after the random token, so that a contender's
	// BusyError and operators' tools can say who holds a resource. It must
	// not contain '|'.
	Owner string
	// Cohort is how many times in a row a released lease may pass straight
	// to a waiter of this process that wants the same resources (a caller
	// of this Locker or of one made from it by With), without a Redis
	// round trip, before the resources go back through Redis to the other
	// processes' waiters. Zero means DefaultCohort; negative turns passing
	// off, so that every hand-off goes through Redis in arrival order;
	// at most MaxCohort. Quorum mode never passes. See Lease.Fence for the
	// fences of passed leases.
	Cohort int
}

func (o Options) withDefaults() Options {
	o.TTL = cmp.Or(o.TTL, DefaultTTL)
	return o
}

func (o Options) validate() error {
	switch {
	case o.TTL < time.Millisecond:
		return fmt.Errorf("lock: TTL %s is under 1ms", o.TTL)
	case o.Wait < 0:
		return fmt.Errorf("lock: Wait %s is negative", o.Wait)
	case o.MaxHold < 0:
		return fmt.Errorf("lock: MaxHold %s is negative", o.MaxHold)
	case strings.Contains(o.Owner, "|"):
		return fmt.Errorf("lock: Owner %q contains '|'", o.Owner)
	case o.Cohort > MaxCohort:
		return fmt.Errorf("lock: Cohort %d is over MaxCohort (%d)", o.Cohort, MaxCohort)
	}
	return nil
}

// A Locker acquires leases on resources. It keeps no state about the leases
// it hands out, so it is safe for concurrent use by any number of callers;
// what it shares between them is one subscription, opened on the first
// wait, through which releases hand resources to waiters in arrival order.
type Locker struct {
	opts   Options
	shared *shared
}

type shared struct {
	prefix   string
	observer Observer
	nodes    []*node
	quorum   int
	// cohorts pass leases between this process's callers; nil in quorum
	// mode.
	cohorts *cohorts
}

// node is one independent Redis deployment.
type node struct {
	client redis.UniversalClient
	// pipe sends the acquire, release and extend scripts, batched.
	pipe *autopipe.Pipe
	// receivers is ARGV[2] of the scripts: whether a hand-off may trust
	// PUBLISH's receiver count to tell a live waiter from a dead one.
	receivers string
	// sharded is set for Redis Cluster: a script may only touch keys of
	// one slot, so resources of several slots are taken slot by slot.
	sharded bool
	hub     *hub
}

// New returns a Locker on one Redis deployment: a single node, Sentinel or
// Cluster client. On Cluster, each resource's keys share a hash slot, and
// an Acquire of resources in several slots takes them slot by slot, in
// order, all or none (see Acquire). Close it when done to end its
// subscription.
func New(client redis.UniversalClient, cfg Config) (*Locker, error) {
	return newLocker([]redis.UniversalClient{client}, cfg)
}

// NewQuorum returns a Locker that holds a lease only while a majority of
// independent Redis masters agree (the Redlock algorithm). A lease's
// validity is its TTL minus the time acquisition took and a clock-drift
// allowance. Waiting polls with jittered backoff instead of queueing, for
// the whole Wait, with a last try at the deadline. A lease's fence is the
// largest among the nodes it won, written back to them before Acquire
// returns, and a lease needs a majority of nodes that carry it, so fences
// grow from lease to lease across partitions, and across crashes while the
// masters' clocks agree.
func NewQuorum(clients []redis.UniversalClient, cfg Config) (*Locker, error) {
	if len(clients) < 3 {
		return nil, fmt.Errorf("lock: quorum needs at least 3 clients, got %d", len(clients))
	}
	return newLocker(clients, cfg)
}

func newLocker(clients []redis.UniversalClient, cfg Config) (*Locker, error) {
	opts := Options{TTL: cfg.TTL, Wait: cfg.Wait, Refresh: cfg.Refresh, Cohort: cfg.Cohort}.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	prefix := cmp.Or(cfg.Prefix, DefaultPrefix)
	if strings.ContainsAny(prefix, "{}|") {
		// Braces would move the hash tag; '|' separates the fields of
		// waiters' queue entries, which name the prefixed channel.
		return nil, fmt.Errorf("lock: Prefix %q contains '{', '}' or '|'", prefix)
	}
	s := &shared{prefix: prefix, observer: cfg.Observer, quorum: len(clients)/2 + 1}
	if s.observer == nil {
		s.observer = nopObserver{}
	}
	for _, c := range clients {
		if c == nil {
			return nil, errors.New("lock: nil client")
		}
		n := &node{client: c, pipe: autopipe.New(c), receivers: "1"}
		if _, ok := c.(*redis.ClusterClient); ok {
			// A script's PUBLISH counts subscribers on its own shard only.
			n.receivers, n.sharded = "0", true
		}
		s.nodes = append(s.nodes, n)
	}
	if len(s.nodes) == 1 {
		s.nodes[0].hub = newHub(clients[0], prefix+"waiters:"+rand.Text())
		s.cohorts = newCohorts()
	}
	return &Locker{opts: opts, shared: s}, nil
}

// With returns a Locker that shares l's clients and subscription but
// acquires with o. It is cheap; make one per kind of work.
func (l *Locker) With(o Options) (*Locker, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Locker{opts: o, shared: l.shared}, nil
}

// Close ends the Locker's subscription and wakes its waiters, which then
// fail with ErrClosed. It does not close the Redis clients, nor release
// leases. Lockers made by With share the subscription: close the one that
// New returned.
func (l *Locker) Close() error {
	for _, n := range l.shared.nodes {
		if n.hub != nil {
			n.hub.close()
		}
	}
	return nil
}

// Acquire obtains all the resources or none. With a zero wait budget it
// tries once; otherwise it queues behind the current holders and is handed
// each resource when its turn comes, until the budget or ctx ends. It
// returns a *BusyError (matching ErrNotAcquired) when a resource stayed
// held, the context's cause when ctx ended first, and wraps Redis errors.
// Acquiring the same resource twice in one call counts once.
func (l *Locker) Acquire(ctx context.Context, resources ...Resource) (*Lease, error) {
	start := time.Now()
	a := &acquisition{
		l:     l,
		token: newToken(l.opts.Owner),
		start: start,
	}
	a.resources = sortedUnique(resources)
	for _, r := range a.resources {
		if r.name == "" {
			return nil, errors.New("lock: zero Resource; build resources with Key")
		}
	}
	if len(a.resources) == 0 {
		return nil, errors.New("lock: Acquire needs at least one resource")
	}
	a.keys = make([]string, 0, keysPer*len(a.resources))
	for _, r := range a.resources {
		k := r.redisKeys(l.shared.prefix)
		a.keys = append(a.keys, k.lock, k.fence, k.queue, k.wanted)
	}
	a.fences = make([]int64, len(a.resources))

	var (
		err    error
		c      *cohort
		passed bool
	)
	switch {
	case l.shared.cohorts == nil:
		err = a.quorum(ctx)
	case l.opts.Cohort < 0:
		err = a.single(ctx)
	default:
		c, passed, err = a.cohort(ctx)
	}
	ev := AcquireEvent{
		Resources: a.resources, TTL: l.opts.TTL, Start: start, Wait: time.Since(start),
		Attempts: a.attempts, Contended: a.contended, HolderTTL: a.holderTTL, Holder: a.holder, Err: err,
	}
	if err != nil {
		l.shared.observer.Acquired(ctx, ev)
		return nil, err
	}
	ev.Fences, ev.Passed = a.fences, passed
	l.shared.observer.Acquired(ctx, ev)
	lease := newLease(ctx, a)
	if c != nil {
		l.shared.cohorts.hold(c, lease, passed)
	}
	return lease, nil
}

// newToken is 128 random bits in base32 (no ':'), then the owner, if any.
func newToken(owner string) string {
	if owner == "" {
		return rand.Text()
	}
	return rand.Text() + ":" + owner
}

func sortedUnique(rs []Resource) []Resource {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Resource) int { return strings.Compare(a.name, b.name) })
	return slices.CompactFunc(rs, func(a, b Resource) bool { return a.name == b.name })
}

// acquisition is the state of one Acquire call.
type acquisition struct {
	l         *Locker
	token     string
	start     time.Time
	resources []Resource
	keys      []string // keysPer per resource, as the scripts take them
	fences    []int64
	// validUntil is the earliest local time at which a resource may expire.
	validUntil time.Time
	attempts   int
	contended  time.Time
	holderTTL  time.Duration
	holder     string // the busy holder's Owner
}

// acquireReply is the decoded reply of acquireScript.
type acquireReply struct {
	ok     bool
	busy   int // index into the keys passed, 0-based
	pttl   time.Duration
	owner  string // the busy resource's holder's Owner
	fences []int64
}

// acquireRun runs acquireScript on keys of one slot; queued says the
// caller may already be in a queue, from an earlier attempt.
func (n *node) acquireRun(ctx context.Context, keys []string, token string, o Options, channel string, queued bool) (acquireReply, error) {
	if channel != "" {
		channel = n.hub.channelFor(keys[0])
	}
	args := []any{token, n.receivers, o.TTL.Milliseconds(), o.Wait.Milliseconds(), channel}
	if queued {
		args = append(args, "1")
	}
	v, err := n.pipe.Run(ctx, acquireScript, keys, args...).Slice()
	if err != nil {
		return acquireReply{}, fmt.Errorf("lock: acquire: %w", err)
	}
	var r acquireReply
	r.ok = v[0].(int64) == 1
	rest := v[1:]
	if !r.ok {
		r.busy = int(v[1].(int64)) - 1
		r.pttl = max(time.Duration(v[2].(int64))*time.Millisecond, 0)
		r.owner, _ = v[3].(string)
		rest = v[4:]
	}
	r.fences = make([]int64, len(rest))
	for i, f := range rest {
		r.fences[i] = f.(int64)
	}
	return r, nil
}

func (a *acquisition) noteBusy(r acquireReply) {
	a.holderTTL, a.holder = r.pttl, r.owner
	if a.contended.IsZero() {
		a.contended = time.Now()
	}
}

func (a *acquisition) busyError(i int) error {
	return &BusyError{Resource: a.resources[i], TTL: a.holderTTL, Owner: a.holder}
}

// release runs releaseScript on every node and reaches a verdict: nil when
// a quorum released every resource, ErrNotHeld when a quorum answered but
// fewer released, else the nodes' errors. It also returns, per resource,
// the wanted mark a node found on it, or "".
func (s *shared) release(ctx context.Context, keys []string, token, entry string) ([]string, error) {
	want := int64(len(keys) / keysPer)
	var mu sync.Mutex
	marks := make([]string, want)
	err := s.verdict(ctx, "release", want, func(ctx context.Context, n *node) (int64, error) {
		released, found, err := n.release(ctx, keys, token, entry)
		mu.Lock()
		for i, m := range found {
			if m != "" {
				marks[i] = m
			}
		}
		mu.Unlock()
		return released, err
	})
	return marks, err
}

// releaseRun runs releaseScript on keys of one slot, passes on the grants
// it made to this Locker's own waiters, and returns how many resources the
// token still held and, per resource, the wanted mark found.
func (n *node) releaseRun(ctx context.Context, keys []string, token, entry string) (int64, []string, error) {
	here := ""
	if n.hub != nil {
		here = n.hub.channelFor(keys[0])
		entry = n.hub.entryFor(entry, keys[0])
	}
	v, err := n.pipe.Run(ctx, releaseScript, keys, token, n.receivers, entry, here).Slice()
	if err != nil {
		return 0, nil, err
	}
	count := len(keys) / keysPer
	marks := make([]string, count)
	for i, m := range v[1 : 1+count] {
		marks[i], _ = m.(string)
	}
	if g := v[1+count:]; len(g) > 0 {
		n.hub.handOver(g)
	}
	released, _ := v[0].(int64)
	return released, marks, nil
}

func (s *shared) extend(ctx context.Context, lockKeys []string, token string, ttl time.Duration) error {
	return s.verdict(ctx, "extend", int64(len(lockKeys)), func(ctx context.Context, n *node) (int64, error) {
		return n.extend(ctx, lockKeys, token, ttl)
	})
}

func (s *shared) verdict(ctx context.Context, op string, want int64, run func(context.Context, *node) (int64, error)) error {
	if len(s.nodes) == 1 {
		// The common case skips the goroutines and their allocations.
		got, err := run(ctx, s.nodes[0])
		return s.judge(op, want, outcome{got, err})
	}
	outs := make([]outcome, len(s.nodes))
	var wg sync.WaitGroup
	for i, n := range s.nodes {
		wg.Go(func() { outs[i].got, outs[i].err = run(ctx, n) })
	}
	wg.Wait()
	return s.judge(op, want, outs...)
}

// outcome is one node's answer to a release or an extend.
type outcome struct {
	got int64
	err error
}

func (s *shared) judge(op string, want int64, outs ...outcome) error {
	var (
		answered, whole int
		errs            []error
	)
	for _, o := range outs {
		switch {
		case o.err != nil:
			errs = append(errs, o.err)
		case o.got == want:
			answered++
			whole++
		default:
			answered++
		}
	}
	switch {
	case whole >= s.quorum:
		return nil
	case answered >= s.quorum:
		return ErrNotHeld
	default:
		return fmt.Errorf("lock: %s: %w", op, errors.Join(errs...))
	}
}

// each runs fn on every node, concurrently when there are several.
func (s *shared) each(ctx context.Context, fn func(context.Context, *node)) {
	if len(s.nodes) == 1 {
		fn(ctx, s.nodes[0])
		return
	}
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Go(func() { fn(ctx, n) })
	}
	wg.Wait()
}

// Want marks r, if it is held, as wanted by a caller outside its queue:
// one that will come back when told, as the worker's parked tasks do. The
// release of every later lease on r finds the mark (Lease.Wanted) until
// ClearWanted removes it, or until ttl passes with no Want on r: a mark
// nobody clears (its holder expired, and nobody locks r again) lasts no
// longer than whoever wanted r waits. It reports whether r is held (by a
// majority of the nodes, in quorum mode); when it is not, nothing was
// marked and nobody will be told.
func (l *Locker) Want(ctx context.Context, r Resource, ttl time.Duration) (bool, error) {
	if cs := l.shared.cohorts; cs != nil {
		cs.want(r)
	}
	k := r.redisKeys(l.shared.prefix)
	mark := rand.Text()
	return l.shared.vote(ctx, "want", func(ctx context.Context, n *node) (bool, error) {
		v, err := wantScript.Run(ctx, n.client, []string{k.lock, k.wanted}, mark, max(ttl.Milliseconds(), 1)).Int()
		return v == 1, err
	})
}

// Held reports whether anyone holds r (a majority of the nodes, in quorum
// mode). It is a snapshot.
func (l *Locker) Held(ctx context.Context, r Resource) (bool, error) {
	key := r.redisKeys(l.shared.prefix).lock
	return l.shared.vote(ctx, "held", func(ctx context.Context, n *node) (bool, error) {
		v, err := n.client.Exists(ctx, key).Result()
		return v > 0, err
	})
}

// vote asks every node and returns whether a quorum said yes, or an error
// when fewer than a quorum answered.
func (s *shared) vote(ctx context.Context, op string, ask func(context.Context, *node) (bool, error)) (bool, error) {
	var (
		mu            sync.Mutex
		answered, yes int
		errs          []error
	)
	s.each(ctx, func(ctx context.Context, n *node) {
		v, err := ask(ctx, n)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		answered++
		if v {
			yes++
		}
	})
	if answered < s.quorum {
		return false, fmt.Errorf("lock: %s: %w", op, errors.Join(errs...))
	}
	return yes >= s.quorum, nil
}
