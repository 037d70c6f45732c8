package lock

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// NewBroadcast is New with grants published the way a single Redis gets
// them, to one channel per Locker, also on Redis Cluster, where PUBLISH is
// broadcast to every node: the baseline that sharded pub/sub is measured
// against.
func NewBroadcast(client redis.UniversalClient, cfg Config) (*Locker, error) {
	l, err := New(client, cfg)
	if err != nil {
		return nil, err
	}
	l.shared.nodes[0].hub.shards = nil
	return l, nil
}

// SlotChannels returns how many slots' channels l subscribes to on Redis
// Cluster, and how many of them Redis has confirmed.
func SlotChannels(l *Locker) (slots, live int) {
	s := l.shared.nodes[0].hub.shards
	if s == nil {
		return 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.slots), len(s.live)
}

// SweepSlotsSoon makes l unsubscribe a slot's channel idle after its last
// wait there could have ended, checking every, instead of minutes later.
// Call it before l's first wait.
func SweepSlotsSoon(l *Locker, every, idle time.Duration) {
	s := l.shared.nodes[0].hub.shards
	s.sweepEvery, s.idleAfter = every, idle
}

// GrantChannel returns the channel on which l's waiters for the resource
// whose lock key is lockKey are told of their grants.
func GrantChannel(l *Locker, lockKey string) string {
	return l.shared.nodes[0].hub.channelFor(lockKey)
}
