package redistest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/keyslot"
)

const (
	// nodeTimeout is each node's cluster-node-timeout: how long a master
	// may be unreachable before the others fail it and its replica takes
	// over. Redis's default is 15 s; a second keeps Kill to a few seconds
	// and is still far above the latency between processes on loopback.
	nodeTimeout = time.Second
	// settleTimeout bounds how long Cluster, Failover and Kill wait for
	// the nodes to agree, and how long redis-cli may take to create the
	// cluster. Settling takes about a second (creation, Failover) or about
	// three (Kill); the rest is headroom for a loaded machine.
	settleTimeout = 30 * time.Second
	// adminTimeout bounds one command the fixture sends to a node while it
	// polls; a node that does not answer in time is retried on the next
	// poll.
	adminTimeout = time.Second
)

// ClusterDeployment is a Redis Cluster of redis-server processes started by
// [Cluster] for one test, all on 127.0.0.1.
//
// It remembers the slot map the nodes last agreed on: when Cluster, Failover
// or Kill returned. [ClusterDeployment.Masters], [ClusterDeployment.Replicas]
// and [ClusterDeployment.MasterOf] answer from that map, not from the nodes,
// so a failover that the test causes some other way is not seen.
//
// Its methods report failures with Fatalf on the test given to Cluster, so
// call them from the test's own goroutine.
type ClusterDeployment struct {
	t     testing.TB
	nodes []*Process // in start order

	mu     sync.Mutex
	admin  map[*Process]*redis.Client // the fixture's own connections
	ids    map[string]*Process        // by cluster node ID
	dead   map[*Process]bool          // killed by Kill
	shards []shard                    // the agreed slot map, sorted by slots
}

// shard is one range of slots and the nodes that serve it.
type shard struct {
	start, end int
	master     *Process
	replicas   []*Process
}

// Cluster starts masters*(1+replicasPerMaster) redis-server processes in
// cluster mode on free 127.0.0.1 ports, joins them into one cluster with
// redis-cli --cluster create, and waits until every node reports
// cluster_state:ok, all of them answer CLUSTER SHARDS with the same map
// covering every slot, each master has replicasPerMaster replicas, and
// every replica's link to its master is up. It fails the test when that
// takes longer than settleTimeout, quoting each node's log.
//
// redis-cli --cluster create needs at least three masters. Each node keeps
// no data on disk, only its nodes.conf, so a node stopped and started again
// with [Process.Stop] and [Process.Start] comes back empty but still a
// member of the cluster. Every process is killed when the test ends.
//
// Without redis-server or redis-cli on PATH, Cluster skips the test or, when
// CI is true, fails it, as [Server] does.
func Cluster(tb testing.TB, masters, replicasPerMaster int) *ClusterDeployment {
	tb.Helper()
	if masters < 3 || replicasPerMaster < 0 {
		tb.Fatalf("redistest: cluster of %d masters with %d replicas each: need at least 3 masters",
			masters, replicasPerMaster)
	}
	bin := lookPath(tb, "redis-server")
	cli := lookPath(tb, "redis-cli")

	c := &ClusterDeployment{
		t:     tb,
		admin: make(map[*Process]*redis.Client),
		ids:   make(map[string]*Process),
		dead:  make(map[*Process]bool),
	}
	addrs := make([]string, 0, masters*(1+replicasPerMaster))
	for range masters * (1 + replicasPerMaster) {
		dir := tb.TempDir()
		p := start(tb, &Process{
			t: tb, bin: bin, dir: dir,
			busPort: pickPort,
			args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
				// A replica may take over however long it was cut off:
				// tests kill masters at any moment.
				"--cluster-replica-validity-factor", "0",
				// A full sync waits 5 s by default for more replicas to
				// share it; here each master has its own.
				"--repl-diskless-sync-delay", "0",
				// CLUSTER SHARDS calls a replica online only once its
				// replication offset is above zero, and a master with no
				// writes moves it only by pinging its replicas: every 10 s
				// by default.
				"--repl-ping-replica-period", "1",
			},
		})
		c.nodes = append(c.nodes, p)
		addrs = append(addrs, p.Addr())
		c.admin[p] = adminClient(tb, p.Addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for _, p := range c.nodes {
		id, err := c.admin[p].ClusterMyID(ctx).Result()
		if err != nil {
			tb.Fatalf("redistest: cluster node %s: CLUSTER MYID: %v", p.Addr(), err)
		}
		c.ids[id] = p
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...) //nolint:gosec // G204: redis-cli from PATH, args are our own addresses
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create %s: %v\n%s\n%s", strings.Join(addrs, " "), err, out, c.logs())
	}
	c.settle("create the cluster", func(shards []shard) error {
		if len(shards) == 0 {
			return errors.New("no slots")
		}
		owners := make(map[*Process]bool)
		for _, s := range shards {
			owners[s.master] = true
			if len(s.replicas) != replicasPerMaster {
				return fmt.Errorf("master %s has %d replicas, want %d", s.master.Addr(), len(s.replicas), replicasPerMaster)
			}
		}
		if len(owners) != masters {
			return fmt.Errorf("%d masters own slots, want %d", len(owners), masters)
		}
		return nil
	})
	return c
}

// adminClient returns a client for the fixture's own polling: short
// timeouts and no retries, so that a dead or busy node costs one poll, not
// the whole wait. It is closed when the test ends.
func adminClient(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  adminTimeout,
		ReadTimeout:  adminTimeout,
		WriteTimeout: adminTimeout,
		MaxRetries:   -1,
		PoolSize:     1,
	})
	closeAtEnd(tb, addr, rdb)
	return rdb
}

// Addrs returns the host:port of every node that Kill has not killed,
// masters first, as a client's seed list.
func (c *ClusterDeployment) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	for _, p := range c.mastersLocked() {
		addrs = append(addrs, p.Addr())
	}
	for _, p := range c.replicasLocked() {
		addrs = append(addrs, p.Addr())
	}
	return addrs
}

// Client returns a go-redis cluster client with default options seeded
// with [ClusterDeployment.Addrs]. It is closed when tb ends, before the
// nodes are killed if tb is the test given to [Cluster] or one of its
// subtests. It follows failovers itself, by MOVED redirects and by
// reloading the slot map, though commands sent while a master is down
// fail until its replica has taken over.
func (c *ClusterDeployment) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	closeAtEnd(tb, "cluster "+strings.Join(c.Addrs(), ","), rdb)
	return rdb
}

// Masters returns the nodes that owned slots in the last agreed map, in
// slot order.
func (c *ClusterDeployment) Masters() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mastersLocked()
}

// Replicas returns the replicas of every master in the last agreed map.
func (c *ClusterDeployment) Replicas() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replicasLocked()
}

// ReplicasOf returns the replicas of master in the last agreed map, none if
// it is not a master there.
func (c *ClusterDeployment) ReplicasOf(master *Process) []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.shards {
		if s.master == master {
			return slices.Clone(s.replicas)
		}
	}
	return nil
}

// MasterOf returns the master that owned key's slot in the last agreed
// map.
func (c *ClusterDeployment) MasterOf(key string) *Process {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := keyslot.Of(key)
	for _, s := range c.shards {
		if s.start <= slot && slot <= s.end {
			return s.master
		}
	}
	c.t.Fatalf("redistest: no master owns slot %d of %q", slot, key)
	return nil
}

func (c *ClusterDeployment) mastersLocked() []*Process {
	var ms []*Process
	for _, s := range c.shards {
		if !slices.Contains(ms, s.master) {
			ms = append(ms, s.master)
		}
	}
	return ms
}

func (c *ClusterDeployment) replicasLocked() []*Process {
	var rs []*Process
	for _, s := range c.shards {
		for _, r := range s.replicas {
			if !slices.Contains(rs, r) {
				rs = append(rs, r)
			}
		}
	}
	return rs
}

// Failover makes a replica of master take its place with CLUSTER FAILOVER,
// the coordinated failover that loses no acknowledged write: master stops
// taking writes until the replica has caught up. It waits until the replica
// owns master's slots in every node's map, master has become its replica,
// and the cluster is ok everywhere, and returns the new master. It fails the
// test when master has no replica or the cluster does not settle within
// settleTimeout.
func (c *ClusterDeployment) Failover(master *Process) *Process {
	c.t.Helper()
	replica := c.replicasOf(master)[0]
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	c.mu.Lock()
	rc := c.admin[replica]
	c.mu.Unlock()
	if err := rc.ClusterFailover(ctx).Err(); err != nil {
		c.t.Fatalf("redistest: CLUSTER FAILOVER on %s, replica of %s: %v", replica.Addr(), master.Addr(), err)
	}
	c.settle("fail "+master.Addr()+" over to "+replica.Addr(), func(shards []shard) error {
		return promoted(shards, replica, master)
	})
	return replica
}

// Kill kills master with SIGKILL, as a crash would, and waits until one of
// its replicas has been elected in its place (after nodeTimeout and an
// election, a few seconds) and the surviving nodes agree on the map and
// report cluster_state:ok. It returns the new master. It fails the test when
// master has no replica or the cluster does not settle within
// settleTimeout. Writes master acknowledged but had not yet passed on are
// lost, as in production.
func (c *ClusterDeployment) Kill(master *Process) *Process {
	c.t.Helper()
	candidates := c.replicasOf(master)
	master.Stop()
	c.mu.Lock()
	c.dead[master] = true
	c.mu.Unlock()
	var winner *Process
	c.settle("replace killed master "+master.Addr(), func(shards []shard) error {
		var err error
		for _, r := range candidates {
			if err = promoted(shards, r, nil); err == nil {
				winner = r
				return nil
			}
		}
		return err
	})
	return winner
}

// replicasOf returns the replicas of master, or fails the test when it has
// none: without one, no failover can happen.
func (c *ClusterDeployment) replicasOf(master *Process) []*Process {
	c.t.Helper()
	rs := c.ReplicasOf(master)
	if len(rs) == 0 {
		c.t.Fatalf("redistest: %s is not a master with a replica in the cluster's map", master.Addr())
	}
	return rs
}

// promoted reports whether shards show replica as a master and, if old is
// not nil, old as one of its replicas.
func promoted(shards []shard, replica, old *Process) error {
	for _, s := range shards {
		if s.master == replica {
			if old != nil && !slices.Contains(s.replicas, old) {
				return fmt.Errorf("%s is master, but %s is not yet its replica", replica.Addr(), old.Addr())
			}
			return nil
		}
	}
	return fmt.Errorf("%s owns no slots yet", replica.Addr())
}

// settle polls every node that is alive until all of them agree on the map
// and it passes check, then remembers that map. It fails the test, quoting
// the last disagreement and every node's log, after settleTimeout.
func (c *ClusterDeployment) settle(what string, check func([]shard) error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for {
		shards, err := c.agreed(ctx)
		if err == nil {
			err = check(shards)
		}
		if err == nil {
			c.mu.Lock()
			c.shards = shards
			c.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("redistest: cluster did not settle after %s (%s): %v\n%s", settleTimeout, what, err, c.logs())
		case <-time.After(probeInterval):
		}
	}
}

// agreed asks every live node for its cluster state, slot map and role,
// and returns the map when every node reports cluster_state:ok, all maps
// are the same and cover every slot, every live node is in the map, and
// every node's own role and replication link match it.
func (c *ClusterDeployment) agreed(ctx context.Context) ([]shard, error) {
	c.mu.Lock()
	var live []*Process
	for _, p := range c.nodes {
		if !c.dead[p] {
			live = append(live, p)
		}
	}
	c.mu.Unlock()

	var (
		first  []shard
		firstP *Process
	)
	for _, p := range live {
		c.mu.Lock()
		rdb := c.admin[p]
		c.mu.Unlock()
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("%s: CLUSTER INFO: %w", p.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return nil, fmt.Errorf("%s: cluster_state is not ok", p.Addr())
		}
		cs, err := rdb.ClusterShards(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("%s: CLUSTER SHARDS: %w", p.Addr(), err)
		}
		shards, err := c.shardsOf(cs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Addr(), err)
		}
		if first == nil {
			first, firstP = shards, p
		} else if !slices.EqualFunc(first, shards, sameShard) {
			return nil, fmt.Errorf("%s and %s disagree on the slot map", firstP.Addr(), p.Addr())
		}
		if err := checkRole(ctx, rdb, p, shards); err != nil {
			return nil, err
		}
	}
	return first, coverage(first, live)
}

// shardsOf maps CLUSTER SHARDS onto the fixture's processes, one shard
// per range of slots, sorted by slot. It fails unless every node that
// serves slots is online: a replica is "loading" until its replication
// offset is above zero, and a dead node is "failed".
func (c *ClusterDeployment) shardsOf(cs []redis.ClusterShard) ([]shard, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var shards []shard
	for _, sh := range cs {
		if len(sh.Slots) == 0 {
			// A master without slots, such as one that Kill replaced: it
			// serves nothing, and coverage reports it if it is alive.
			continue
		}
		var s shard
		for _, n := range sh.Nodes {
			p := c.ids[n.ID]
			switch {
			case p == nil:
				return nil, fmt.Errorf("shard of slots %v has unknown node %s (%s)", sh.Slots, n.ID, n.Endpoint)
			case n.Health != "online":
				return nil, fmt.Errorf("%s serves slots %v but its health is %s", p.Addr(), sh.Slots, n.Health)
			case n.Role == "master" && s.master != nil:
				return nil, fmt.Errorf("slots %v have two masters, %s and %s", sh.Slots, s.master.Addr(), p.Addr())
			case n.Role == "master":
				s.master = p
			default:
				s.replicas = append(s.replicas, p)
			}
		}
		if s.master == nil {
			return nil, fmt.Errorf("slots %v have no master", sh.Slots)
		}
		slices.SortFunc(s.replicas, func(a, b *Process) int { return cmp.Compare(a.port, b.port) })
		for _, r := range sh.Slots {
			s.start, s.end = int(r.Start), int(r.End)
			shards = append(shards, s)
		}
	}
	slices.SortFunc(shards, func(a, b shard) int { return cmp.Compare(a.start, b.start) })
	return shards, nil
}

func sameShard(a, b shard) bool {
	return a.start == b.start && a.end == b.end && a.master == b.master && slices.Equal(a.replicas, b.replicas)
}

// checkRole returns an error unless p's own ROLE matches its place in
// shards and, for a replica, its link to its master is up and synced.
func checkRole(ctx context.Context, rdb *redis.Client, p *Process, shards []shard) error {
	var master *Process // p's master in the map, nil if p is one
	for _, s := range shards {
		if slices.Contains(s.replicas, p) {
			master = s.master
		}
	}
	role, err := rdb.Do(ctx, "ROLE").Slice()
	if err != nil {
		return fmt.Errorf("%s: ROLE: %w", p.Addr(), err)
	}
	if len(role) == 0 {
		return fmt.Errorf("%s: ROLE answered nothing", p.Addr())
	}
	if master == nil {
		if role[0] != "master" {
			return fmt.Errorf("%s: ROLE says %v, but the map has it as nobody's replica", p.Addr(), role[0])
		}
		return nil
	}
	if len(role) < 3 || role[0] != "slave" || fmt.Sprint(role[2]) != strconv.Itoa(master.port) {
		return fmt.Errorf("%s: a replica of %s in the map, but ROLE says %v", p.Addr(), master.Addr(), role)
	}
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", p.Addr(), err)
	}
	if !linkUp(info) {
		return fmt.Errorf("%s: link to master %s not up and synced", p.Addr(), master.Addr())
	}
	return nil
}

// coverage returns an error unless shards cover every slot exactly once
// and name every live node.
func coverage(shards []shard, live []*Process) error {
	next := 0
	seen := make(map[*Process]bool)
	for _, s := range shards {
		if s.start != next {
			return fmt.Errorf("slots %d-%d have no master", next, s.start-1)
		}
		next = s.end + 1
		seen[s.master] = true
		for _, r := range s.replicas {
			seen[r] = true
		}
	}
	if next != keyslot.Slots {
		return fmt.Errorf("slots %d-%d have no master", next, keyslot.Slots-1)
	}
	for _, p := range live {
		if !seen[p] {
			return fmt.Errorf("%s serves no slots, as master or replica", p.Addr())
		}
	}
	return nil
}

// logs returns the end of every node's log, for a failure message.
func (c *ClusterDeployment) logs() string {
	var b strings.Builder
	for _, p := range c.nodes {
		fmt.Fprintf(&b, "--- log of %s:\n%s\n", p.Addr(), readTail(p.logPath()))
	}
	return b.String()
}
