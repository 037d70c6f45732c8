package lock

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// On Redis Cluster a PUBLISH is broadcast over the cluster bus to every
// node, replicas included, while a Redis 7 SPUBLISH stays within the shard
// that owns its channel's slot. A script may only SPUBLISH to a channel of
// its own keys' slot, so a Locker on Cluster has one channel per slot,
// named by its one channel and a hash tag of that slot, and its waiters
// queue with the channel of the slot they wait on. It subscribes to a
// slot's channel when one of its callers first waits there, without making
// that caller wait for it: until Redis confirms, a grant may be missed, so
// the waiter polls (liveOn is false) and is nudged at the confirmation.
// Measured on a 3-master cluster with a replica each (medians of three
// runs, shardedpubsub_bench_test.go): three Lockers on hot resources of
// every master made 2,532 hand-offs/s at 240 µs of Redis CPU each, against
// 763/s at 326 µs with PUBLISH; the nodes that do not own the resource
// spent 0.4 µs per hand-off instead of 74 µs.
//
// One SSUBSCRIBE may only name channels of one slot, and go-redis
// resubscribes after a reconnection with one command naming them all; so
// a connection per master takes one SSUBSCRIBE per slot, and any error on
// it ends it: its slots go back to pending and are subscribed afresh, each
// on the master the client then knows for it. A master that loses a slot
// (a failover, a migration) unsubscribes its channel itself (SUNSUBSCRIBE
// pushed to the client), which sends the slot back to pending too.
type shardSubs struct {
	client  *redis.ClusterClient
	base    string
	deliver func(payload string)
	nudge   func()

	// sweepEvery and idleAfter: see sweep.
	sweepEvery, idleAfter time.Duration

	mu    sync.Mutex
	slots map[int]*nodeSub // slot -> its connection; nil while pending
	live  map[int]bool     // slots whose subscription Redis confirmed
	// until is, per slot, when the wait budget of the last of our callers
	// to wait there ends: after it no queue entry of ours names the
	// slot's channel, or none that a release would still hand to.
	until   map[int]time.Time
	pending []int
	subs    map[*nodeSub]bool
	// failed is set when a connection failed since manage last looked:
	// it then pauses before subscribing again, not to spin on a dead
	// master.
	failed  bool
	wake    chan struct{}
	closed  chan struct{}
	started bool
	wg      sync.WaitGroup
}

// nodeSub is one connection, to one master, subscribed to the channels of
// some of its slots.
type nodeSub struct {
	addr string
	ps   *redis.PubSub
}

func newShardSubs(client *redis.ClusterClient, base string, deliver func(string), nudge func()) *shardSubs {
	return &shardSubs{
		client: client, base: base, deliver: deliver, nudge: nudge,
		slots: make(map[int]*nodeSub),
		live:  make(map[int]bool),
		until: make(map[int]time.Time),

		sweepEvery: slotSweepEvery,
		idleAfter:  slotIdleAfter,
		subs:       make(map[*nodeSub]bool),
		wake:       make(chan struct{}, 1),
		closed:     make(chan struct{}),
	}
}

// channel returns the Locker's channel for slot.
func (s *shardSubs) channel(slot int) string {
	return s.base + "{" + slotTags()[slot] + "}"
}

// Every slot a Locker waited on would stay subscribed for good: about
// 370 bytes of Redis memory per channel (measured), up to 6 MB per Locker
// over a cluster's 16384 slots. A slot is unsubscribed once no wait of ours
// can still be queued there (until) and slotIdleAfter more has passed,
// which keeps hot slots subscribed; sweeps run every slotSweepEvery.
const (
	slotSweepEvery = time.Minute
	slotIdleAfter  = 10 * time.Minute
)

// liveOn reports whether grants for slot reach this Locker, and starts
// subscribing to its channel when nobody has asked before. until is when
// the caller's wait budget ends. It never waits for Redis.
func (s *shardSubs) liveOn(slot int, until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.After(s.until[slot]) {
		s.until[slot] = until
	}
	if _, known := s.slots[slot]; known {
		return s.live[slot]
	}
	select {
	case <-s.closed:
		return false
	default:
	}
	s.slots[slot] = nil
	s.pending = append(s.pending, slot)
	if !s.started {
		s.started = true
		s.wg.Go(s.manage)
	}
	s.kick()
	return false
}

func (s *shardSubs) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// manage subscribes pending slots, retrying with a growing pause while
// that fails (a master down, a slot map not yet reloaded).
func (s *shardSubs) manage() {
	ctx := context.Background()
	pause := 10 * time.Millisecond
	sweep := time.NewTicker(s.sweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-sweep.C:
			s.sweep(ctx)
			continue
		case <-s.wake:
		}
		ok := s.subscribePending(ctx)
		s.mu.Lock()
		ok = ok && !s.failed
		s.failed = false
		s.mu.Unlock()
		if ok {
			pause = 10 * time.Millisecond
			continue
		}
		// Something failed: reload the slot map and try again later.
		s.client.ReloadState(ctx)
		select {
		case <-s.closed:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
		s.kick()
	}
}

// subscribePending sends one SSUBSCRIBE per pending slot, on the
// connection to the slot's master, opening it when there is none. It
// returns false when a slot is left pending.
func (s *shardSubs) subscribePending(ctx context.Context) bool {
	s.mu.Lock()
	todo := s.pending
	s.pending = nil
	s.mu.Unlock()
	ok := true
	for i, slot := range todo {
		if err := s.subscribe(ctx, slot); err != nil {
			s.mu.Lock()
			s.pending = append(s.pending, todo[i:]...)
			s.mu.Unlock()
			ok = false
			break
		}
	}
	return ok
}

func (s *shardSubs) subscribe(ctx context.Context, slot int) error {
	ch := s.channel(slot)
	master, err := s.client.MasterForKey(ctx, ch)
	if err != nil {
		return err
	}
	addr := master.Options().Addr
	s.mu.Lock()
	if ns, wanted := s.slots[slot]; ns != nil || !wanted {
		s.mu.Unlock()
		return nil // subscribed already by an earlier pass, or swept
	}
	var ns *nodeSub
	for sub := range s.subs {
		if sub.addr == addr {
			ns = sub
		}
	}
	if ns != nil {
		s.slots[slot] = ns
		s.mu.Unlock()
		// Only writes the command; the confirmation comes to ns's loop.
		if err := ns.ps.SSubscribe(ctx, ch); err != nil {
			s.drop(ns)
			return err
		}
		return nil
	}
	s.mu.Unlock()
	// A new connection, routed by go-redis to the master of ch's slot.
	// Dialing happens here, without the lock, which waiters' liveOn takes;
	// only manage adds connections, so no other can appear meanwhile. A
	// failed dial shows as an error in the loop.
	ns = &nodeSub{addr: addr, ps: s.client.SSubscribe(ctx, ch)}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		_ = ns.ps.Close() // never used
		return nil
	default:
	}
	s.subs[ns] = true
	s.slots[slot] = ns
	s.wg.Go(func() { s.loop(ctx, ns) })
	return nil
}

// loop reads one connection's confirmations and grants until it fails or
// the Locker closes.
func (s *shardSubs) loop(ctx context.Context, ns *nodeSub) {
	for {
		msg, err := ns.ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				_ = ns.ps.Ping(ctx) // a dead connection fails the next receive
				continue
			}
			s.drop(ns)
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			s.confirm(ns, m)
		case *redis.Message:
			s.deliver(m.Payload)
		}
	}
}

// confirm records what Redis says of one of ns's channels: subscribed
// (grants reach us: nudge the waiters, which may have missed one before),
// or unsubscribed because its master lost the slot (waiters poll until it
// is subscribed again, wherever the slot went).
func (s *shardSubs) confirm(ns *nodeSub, m *redis.Subscription) {
	slot, ok := s.slotOf(m.Channel)
	if !ok {
		return
	}
	s.mu.Lock()
	if s.slots[slot] != ns {
		s.mu.Unlock()
		return
	}
	switch m.Kind {
	case "ssubscribe":
		s.live[slot] = true
	case "sunsubscribe":
		delete(s.live, slot)
		s.slots[slot] = nil
		s.pending = append(s.pending, slot)
		s.kick()
	}
	s.mu.Unlock()
	s.nudge()
}

// drop ends a connection that failed: its slots go back to pending, and
// their waiters poll until they are subscribed again.
func (s *shardSubs) drop(ns *nodeSub) {
	s.mu.Lock()
	if !s.subs[ns] {
		s.mu.Unlock()
		return
	}
	delete(s.subs, ns)
	s.failed = true
	for slot, sub := range s.slots {
		if sub == ns {
			delete(s.live, slot)
			s.slots[slot] = nil
			s.pending = append(s.pending, slot)
		}
	}
	s.kick()
	s.mu.Unlock()
	_ = ns.ps.Close() // it failed already; its own error is what we act on
	s.nudge()
}

// sweep unsubscribes the slots where no wait of ours has been possible
// for idleAfter. Redis's confirmation then finds the slot unknown, and a
// later wait there subscribes it again.
func (s *shardSubs) sweep(ctx context.Context) {
	type leaving struct {
		ns *nodeSub
		ch string
	}
	var out []leaving
	s.mu.Lock()
	now := time.Now()
	for slot, until := range s.until {
		if now.Before(until.Add(s.idleAfter)) {
			continue
		}
		if ns := s.slots[slot]; ns != nil {
			out = append(out, leaving{ns, s.channel(slot)})
		}
		delete(s.until, slot)
		delete(s.slots, slot)
		delete(s.live, slot)
	}
	s.mu.Unlock()
	for _, l := range out {
		// Also drops the channel from what go-redis resubscribes on a
		// reconnection. An error fails the connection's loop too, which
		// ends it.
		_ = l.ns.ps.SUnsubscribe(ctx, l.ch)
	}
}

// slotOf returns the slot a channel of ours is for.
func (s *shardSubs) slotOf(channel string) (int, bool) {
	if !strings.HasPrefix(channel, s.base+"{") {
		return 0, false
	}
	return keyslot.Of(channel), true
}

func (s *shardSubs) close() {
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return
	default:
	}
	close(s.closed)
	subs := make([]*nodeSub, 0, len(s.subs))
	for ns := range s.subs {
		subs = append(subs, ns)
	}
	s.mu.Unlock()
	for _, ns := range subs {
		_ = ns.ps.Close() // unblocks its loop, which then sees closed
	}
	s.wg.Wait()
}

// slotTags returns, per Cluster slot, the shortest base-36 number that
// hashes to it, so that a channel tagged with it lives in that slot.
var slotTags = sync.OnceValue(func() []string {
	tags := make([]string, keyslot.Slots)
	for i, left := 0, keyslot.Slots; left > 0; i++ {
		t := strconv.FormatInt(int64(i), 36)
		if s := keyslot.Of(t); tags[s] == "" {
			tags[s] = t
			left--
		}
	}
	return tags
})
