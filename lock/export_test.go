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

// FenceStride is how far apart Redis hands out fences.
const FenceStride = fenceStride

// CohortWaiters returns how many callers wait in line in l's process for
// exactly the resources rs, behind its cohort's holder or leader.
func CohortWaiters(l *Locker, rs ...Resource) int {
	cs := l.shared.cohorts
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[cohortKey(sortedUnique(rs))]
	if c == nil {
		return 0
	}
	return len(c.waiters)
}

// Cohorts returns how many cohorts l's process has.
func Cohorts(l *Locker) int {
	cs := l.shared.cohorts
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// FenceRetention is how long a fence counter outlives its last bump, and
// FenceRetentionMS the same as the scripts have it.
const (
	FenceRetention   = fenceRetention
	FenceRetentionMS = fenceRetentionMS
)
