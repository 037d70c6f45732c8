package lock

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

// hub is a Locker's one subscription. Release scripts publish a grant to it
// when they hand a resource to one of its waiters; it routes the grant to
// the waiting goroutine by token. It starts on the first wait and lives
// until Close. On Redis Cluster it is one channel per slot instead, with
// sharded pub/sub (shardsub.go).
type hub struct {
	client  redis.UniversalClient
	channel string
	// shards, set on Cluster, holds the per-slot channels; the one
	// channel is then only their common name.
	shards *shardSubs
	// live is true while the subscription is confirmed. While false, grants
	// may be lost (and hand-offs skip our waiters), so waiters poll.
	live atomic.Bool

	mu      sync.Mutex
	waiters map[string]*waiter
	ps      *redis.PubSub
	closed  chan struct{} // closed by close
	done    chan struct{} // closed when the loop has returned
}

type waiter struct {
	grants chan grant
	// nudge asks the waiter to retry at once: the subscription was
	// (re)established, and a grant may have been missed before it.
	nudge  chan struct{}
	closed <-chan struct{}
}

type grant struct {
	fence   int64
	lockKey string
}

// pingEvery is how long the subscription may be silent before we ping it,
// so that a dead connection is noticed and replaced.
const pingEvery = 30 * time.Second

func newHub(client redis.UniversalClient, channel string) *hub {
	h := &hub{
		client:  client,
		channel: channel,
		waiters: make(map[string]*waiter),
		closed:  make(chan struct{}),
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		h.shards = newShardSubs(cc, channel, h.deliver, h.nudgeAll)
	}
	return h
}

// channelFor returns the channel on which a waiter of this Locker for the
// resource whose lock key is lockKey is told of its grant.
func (h *hub) channelFor(lockKey string) string {
	if h.shards == nil {
		return h.channel
	}
	return h.shards.channel(keyslot.Of(lockKey))
}

// entryFor returns the queue entry of a waiter for lockKey's resource,
// given its entry as queueEntry builds it on the Locker's one channel.
func (h *hub) entryFor(entry, lockKey string) string {
	if h.shards == nil || entry == "" {
		return entry
	}
	token, rest, _ := strings.Cut(entry, "|")
	_, rest, _ = strings.Cut(rest, "|")
	return token + "|" + h.channelFor(lockKey) + "|" + rest
}

// liveFor reports whether a grant for lockKey's resource would reach this
// Locker now; while it would not, waiters poll. until is when the caller
// stops waiting.
func (h *hub) liveFor(lockKey string, until time.Time) bool {
	if h.shards == nil {
		return h.live.Load()
	}
	return h.shards.liveOn(keyslot.Of(lockKey), until)
}

// register adds a waiter for token, subscribing first if this is the first
// wait. A failed subscription is not an error: the waiter polls.
func (h *hub) register(ctx context.Context, token string) (*waiter, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
		return nil, ErrClosed
	default:
	}
	if h.ps == nil && h.shards == nil {
		h.subscribe(ctx)
	}
	w := &waiter{grants: make(chan grant, 1), nudge: make(chan struct{}, 1), closed: h.closed}
	h.waiters[token] = w
	return w, nil
}

func (h *hub) unregister(token string) {
	h.mu.Lock()
	delete(h.waiters, token)
	h.mu.Unlock()
}

// subscribe opens the subscription and waits for Redis to confirm it, so
// that a hand-off published right after our first queue entry reaches us.
// Called with h.mu held.
func (h *hub) subscribe(ctx context.Context) {
	// WithoutCancel: the subscription outlives the waiter that opened it.
	ctx = context.WithoutCancel(ctx)
	ps := h.client.Subscribe(ctx, h.channel)
	if _, err := ps.ReceiveTimeout(ctx, 2*time.Second); err != nil {
		_ = ps.Close() // the subscription never worked; nothing to report but err
		return
	}
	h.live.Store(true)
	h.ps = ps
	h.done = make(chan struct{})
	go h.loop(ctx, ps)
}

func (h *hub) loop(ctx context.Context, ps *redis.PubSub) {
	defer close(h.done)
	pause := 10 * time.Millisecond
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if err != nil {
			select {
			case <-h.closed:
				return
			default:
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				_ = ps.Ping(ctx) // a dead connection fails the next receive
				continue
			}
			// go-redis reconnects and resubscribes on the next receive;
			// until it confirms, waiters poll.
			h.live.Store(false)
			h.nudgeAll()
			select {
			case <-h.closed:
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 10 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			h.live.Store(true)
			h.nudgeAll()
		case *redis.Message:
			h.deliver(m.Payload)
		}
	}
}

// deliver routes "token|fence|lock key" to its waiter. A grant for a token
// nobody waits for needs nothing: the waiter that left took its queue entry
// and any resource handed to it back in one script.
func (h *hub) deliver(payload string) {
	token, rest, ok := strings.Cut(payload, "|")
	if !ok {
		return
	}
	fence, lockKey, ok := strings.Cut(rest, "|")
	if !ok {
		return
	}
	f, err := strconv.ParseInt(fence, 10, 64)
	if err != nil {
		return
	}
	h.grant(token, grant{fence: f, lockKey: lockKey})
}

// handOver passes on the grants that a release in this process made to our
// own waiters ("token, fence, lock key" triples), then yields, so that the
// new holder runs now rather than after the releaser's next request.
func (h *hub) handOver(grants []any) {
	for ; len(grants) >= 3; grants = grants[3:] {
		token, _ := grants[0].(string)
		fence, _ := grants[1].(int64)
		lockKey, _ := grants[2].(string)
		h.grant(token, grant{fence: fence, lockKey: lockKey})
	}
	runtime.Gosched()
}

func (h *hub) grant(token string, g grant) {
	h.mu.Lock()
	w := h.waiters[token]
	h.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case w.grants <- g:
	default: // an unread grant is already there; the waiter's retry finds this one in Redis
	}
}

func (h *hub) nudgeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.waiters {
		select {
		case w.nudge <- struct{}{}:
		default:
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	select {
	case <-h.closed:
		h.mu.Unlock()
		return
	default:
	}
	close(h.closed)
	ps, done := h.ps, h.done
	h.mu.Unlock()
	if h.shards != nil {
		h.shards.close()
	}
	if ps != nil {
		_ = ps.Close() // unblocks the loop's receive; the loop then sees closed
		<-done
	}
}
