package lock

import "github.com/redis/go-redis/v9"

// NewSharded is New as it works on Redis Cluster (one script per slot),
// on any client, so that the conformance suite can run the Cluster path
// against a single redis-server.
func NewSharded(client redis.UniversalClient, cfg Config) (*Locker, error) {
	l, err := New(client, cfg)
	if err != nil {
		return nil, err
	}
	for _, n := range l.shared.nodes {
		n.sharded = true
	}
	return l, nil
}
