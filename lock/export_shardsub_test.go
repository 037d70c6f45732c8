package lock

import "github.com/redis/go-redis/v9"

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
