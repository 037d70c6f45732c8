package redistest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// syncTimeout bounds how long Replica waits for the initial sync.
const syncTimeout = 10 * time.Second

// Replica starts a redis-server as [Server] does, makes it a replica of
// master (REPLICAOF), and waits until the initial sync is done and the
// link is up, so that what master holds now, the replica holds too. Later
// writes reach it asynchronously, as on a Sentinel deployment; a test
// holds them back by pausing the replica and dropping its link on the
// master (CLIENT KILL TYPE replica), and fails over with
// [Process.Promote].
func Replica(tb testing.TB, master *Process) *Process {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	mc := redis.NewClient(&redis.Options{Addr: master.Addr()})
	defer mc.Close()
	// A full sync waits 5 s by default for more replicas to share it.
	if err := mc.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		tb.Fatalf("redistest: configure master %s: %v", master.Addr(), err)
	}
	p := Server(tb)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	defer rdb.Close()
	host, port, _ := strings.Cut(master.Addr(), ":")
	if err := rdb.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		tb.Fatalf("redistest: replicaof %s: %v", master.Addr(), err)
	}
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err == nil && linkUp(info) {
			return p
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("redistest: replica %s of %s not in sync after %s (last INFO error: %v):\n%s",
				p.Addr(), master.Addr(), syncTimeout, err, info)
		case <-time.After(probeInterval):
		}
	}
}

// linkUp reports whether INFO replication shows a replica whose link to
// its master is up and whose initial sync is over.
func linkUp(info string) bool {
	fields := make(map[string]string)
	for l := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			fields[k] = v
		}
	}
	return fields["role"] == "slave" && fields["master_link_status"] == "up" && fields["master_sync_in_progress"] == "0"
}

// Promote makes p a master that accepts writes (REPLICAOF NO ONE), keeping
// the data it has, which is what a Sentinel failover does to the replica
// it elects.
func (p *Process) Promote() {
	p.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		p.t.Fatalf("redistest: promote %s: %v", p.Addr(), err)
	}
	role, err := rdb.Do(ctx, "ROLE").Slice()
	if err == nil && (len(role) == 0 || role[0] != "master") {
		err = fmt.Errorf("ROLE answered %v", role)
	}
	if err != nil {
		p.t.Fatalf("redistest: promote %s: %v", p.Addr(), err)
	}
}

// DropReplicas makes p, a master, close the links of its replicas (CLIENT
// KILL TYPE replica) and returns how many it closed. Until a replica
// reconnects, which it tries about once a second unless it is paused, p
// writes only to its backlog: what p takes from then on is what a failover
// loses.
func (p *Process) DropReplicas() int {
	p.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	n, err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Int()
	if err != nil {
		p.t.Fatalf("redistest: drop replicas of %s: %v", p.Addr(), err)
	}
	return n
}

// errNotReplicated is returned by WaitReplicated when no replica
// acknowledged in time.
var errNotReplicated = errors.New("not acknowledged by a replica")

// WaitReplicated writes a marker to p, a master, and waits (WAIT) until n
// replicas have acknowledged it, and so every write p took before it. It
// fails the test when they do not within a few seconds.
func (p *Process) WaitReplicated(n int) {
	p.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	// WAIT counts acknowledgements of this connection's last write, so
	// the marker and WAIT must share one connection.
	var acked *redis.Cmd
	_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "redistest:replicated", strconv.FormatInt(time.Now().UnixNano(), 10), 0)
		acked = pipe.Do(ctx, "WAIT", n, (syncTimeout / 2).Milliseconds())
		return nil
	})
	if err == nil {
		if got, _ := acked.Int(); got < n {
			err = fmt.Errorf("%w: %d of %d", errNotReplicated, got, n)
		}
	}
	if err != nil {
		p.t.Fatalf("redistest: wait for %d replicas of %s: %v", n, p.Addr(), err)
	}
}
