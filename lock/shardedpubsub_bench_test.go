package lock_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// handoffBenchEnv turns on TestHandoffCost, which takes about half a
// minute per run and only measures: it asserts nothing about the figures.
const handoffBenchEnv = "TURNSTILE_HANDOFF_BENCH"

// TestHandoffCost measures what a lock hand-off costs a real
// 3-master Redis Cluster (one replica each), to decide whether sharded
// pub/sub (SPUBLISH, Redis 7) pays for the hand-off's grant (issue 14).
// A PUBLISH on Cluster is broadcast over the cluster bus to every node,
// replicas included; an SPUBLISH reaches only the nodes of its slot's
// shard. Per run, in this order, against the same cluster, each node's
// CPU while idle measured first and subtracted:
//
//   - lock/spread/{broadcast,sharded}: three Lockers (separate clients,
//     as three processes would be) contend on two hot resources per
//     master; every hand-off goes through Redis (Cohort off). Hand-offs
//     per second, and Redis CPU per hand-off over all nodes. broadcast is
//     the Locker as on one Redis (PUBLISH to its one channel), sharded as
//     it runs on Cluster (SPUBLISH to its channel for the slot).
//   - lock/one-master/{broadcast,sharded}: the same on two resources of
//     one master, so that the CPU splits into the owning master, its
//     replica and the other nodes, which only see the broadcast.
//   - raw/publish and raw/spublish: a script that sets a key and publishes
//     a grant-sized message, with a subscriber listening, on one master:
//     the pub/sub part of a hand-off alone, the two ways.
//   - latency/publish and latency/spublish: one such grant at a time, from
//     the script's call to the subscriber's receipt.
//
// Run it with TURNSTILE_HANDOFF_BENCH=1 (TURNSTILE_HANDOFF_RUNS sets the
// number of runs, default 3; TURNSTILE_HANDOFF_SECONDS each phase's
// length, default 4):
//
//	TURNSTILE_HANDOFF_BENCH=1 go test ./lock/ -run TestHandoffCost -v -timeout 30m
func TestHandoffCost(t *testing.T) {
	if os.Getenv(handoffBenchEnv) != "1" {
		t.Skipf("set %s=1 to measure hand-offs on a real cluster", handoffBenchEnv)
	}
	runs := envInt(t, "TURNSTILE_HANDOFF_RUNS", 3)
	phase := time.Duration(envInt(t, "TURNSTILE_HANDOFF_SECONDS", 4)) * time.Second
	cluster := redistest.Cluster(t, 3, 1)
	b := newHandoffBench(t, cluster)
	owner := cluster.Masters()[0]

	latencies := map[string][]time.Duration{}
	results := map[string][]handoffResult{}
	var order []string
	record := func(name string, r handoffResult) {
		if _, ok := results[name]; !ok {
			order = append(order, name)
		}
		results[name] = append(results[name], r)
		t.Logf("%-22s %s", name, r)
	}
	for range runs {
		b.measureIdle(phase)
		for _, m := range handoffModes {
			record("lock/spread"+m.suffix, b.lockPhase(m, b.hotResources(nil, 2), phase))
			record("lock/one-master"+m.suffix, b.lockPhase(m, b.hotResources(owner, 2), phase))
		}
		record("raw/publish", b.rawPhase(owner, "PUBLISH", phase))
		record("raw/spublish", b.rawPhase(owner, "SPUBLISH", phase))
		for _, cmd := range []string{"PUBLISH", "SPUBLISH"} {
			p50, p99 := b.latency(owner, cmd, 300)
			latencies[cmd] = append(latencies[cmd], p50)
			t.Logf("latency/%-14s p50 %s  p99 %s", strings.ToLower(cmd), p50, p99)
		}
	}
	t.Logf("medians of %d runs:", runs)
	for _, name := range order {
		t.Logf("%-22s %s", name, median(results[name]))
	}
	for cmd, ls := range latencies {
		slices.Sort(ls)
		t.Logf("latency/%-14s p50 %s", strings.ToLower(cmd), ls[len(ls)/2])
	}
}

// handoffMode is one way of running the lock in the bench.
type handoffMode struct {
	suffix string
	new    func(redis.UniversalClient, lock.Config) (*lock.Locker, error)
}

// handoffModes are the lock's two ways of publishing grants on Cluster.
var handoffModes = []handoffMode{
	{suffix: "/broadcast", new: lock.NewBroadcast},
	{suffix: "/sharded", new: lock.New},
}

// handoffResult is one phase's figures. CPU is in microseconds per
// hand-off (or per message, for the raw phases).
type handoffResult struct {
	perSecond float64
	// total is every node's CPU; owner, ownerReplica and others split it
	// when the phase's resources are on one master.
	total, owner, ownerReplica, others float64
	// handoffs counts the grants published (PUBLISH and SPUBLISH calls).
	handoffs int64
}

func (r handoffResult) String() string {
	return fmt.Sprintf("%8.0f/s  cpu µs per hand-off: total %6.1f  owner %6.1f  owner's replica %5.1f  others %5.1f  (%d hand-offs)",
		r.perSecond, r.total, r.owner, r.ownerReplica, r.others, r.handoffs)
}

// median returns the median of each figure on its own.
func median(rs []handoffResult) handoffResult {
	pick := func(f func(handoffResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	hs := make([]int64, len(rs))
	for i, r := range rs {
		hs[i] = r.handoffs
	}
	slices.Sort(hs)
	return handoffResult{
		perSecond:    pick(func(r handoffResult) float64 { return r.perSecond }),
		total:        pick(func(r handoffResult) float64 { return r.total }),
		owner:        pick(func(r handoffResult) float64 { return r.owner }),
		ownerReplica: pick(func(r handoffResult) float64 { return r.ownerReplica }),
		others:       pick(func(r handoffResult) float64 { return r.others }),
		handoffs:     hs[len(hs)/2],
	}
}

type handoffBench struct {
	t *testing.T
	// idle is each node's CPU per second with no load (cluster bus pings,
	// cron, replication), subtracted from every phase's.
	idle    map[*redistest.Process]float64
	cluster *redistest.ClusterDeployment
	// admin holds one plain client per node, for INFO.
	admin map[*redistest.Process]*redis.Client
	nodes []*redistest.Process
	next  atomic.Int64 // makes every phase's resources fresh
}

func newHandoffBench(t *testing.T, c *redistest.ClusterDeployment) *handoffBench {
	t.Helper()
	b := &handoffBench{t: t, cluster: c, admin: map[*redistest.Process]*redis.Client{}}
	b.nodes = append(c.Masters(), c.Replicas()...)
	for _, p := range b.nodes {
		b.admin[p] = p.Client(t)
	}
	return b
}

// hotResources returns n fresh resources on every master, or on master
// only when it is not nil.
func (b *handoffBench) hotResources(master *redistest.Process, n int) []lock.Resource {
	masters := b.cluster.Masters()
	if master != nil {
		masters = []*redistest.Process{master}
	}
	count := map[*redistest.Process]int{}
	var rs []lock.Resource
	for len(rs) < n*len(masters) {
		r := lock.Key("hot", b.next.Add(1))
		m := b.cluster.MasterOf(lock.DefaultPrefix + "{" + r.String() + "}")
		if slices.Contains(masters, m) && count[m] < n {
			count[m]++
			rs = append(rs, r)
		}
	}
	return rs
}

// lockPhase runs three Lockers, each with one goroutine per resource that
// acquires and releases it in a loop, for d.
func (b *handoffBench) lockPhase(m handoffMode, rs []lock.Resource, d time.Duration) handoffResult {
	t := b.t
	cfg := lock.Config{Wait: 10 * time.Second, TTL: 5 * time.Second, Cohort: -1}
	var lockers []*lock.Locker
	for range 3 {
		l, err := m.new(b.cluster.Client(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		lockers = append(lockers, l)
	}
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	var (
		wg       sync.WaitGroup
		acquired atomic.Int64
	)
	before := b.snapshot()
	for _, l := range lockers {
		for _, r := range rs {
			wg.Go(func() {
				for ctx.Err() == nil {
					lease, err := l.Acquire(ctx, r)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("acquire %s: %v", r, err)
						}
						return
					}
					acquired.Add(1)
					if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
						t.Errorf("release %s: %v", r, err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	after := b.snapshot()
	for _, l := range lockers {
		_ = l.Close()
	}
	var owner *redistest.Process
	if ms := b.mastersOf(rs); len(ms) == 1 {
		owner = ms[0]
	}
	return b.result(before, after, owner, d)
}

// measureIdle measures b.idle over d.
func (b *handoffBench) measureIdle(d time.Duration) {
	before := b.snapshot()
	time.Sleep(d)
	after := b.snapshot()
	b.idle = map[*redistest.Process]float64{}
	for _, p := range b.nodes {
		b.idle[p] = (after[p].cpu - before[p].cpu) / d.Seconds()
	}
}

func (b *handoffBench) mastersOf(rs []lock.Resource) []*redistest.Process {
	var ms []*redistest.Process
	for _, r := range rs {
		m := b.cluster.MasterOf(lock.DefaultPrefix + "{" + r.String() + "}")
		if !slices.Contains(ms, m) {
			ms = append(ms, m)
		}
	}
	return ms
}

// latency times n grants one at a time, from the script's call to the
// subscriber's receipt, and returns the median and the 99th percentile.
func (b *handoffBench) latency(master *redistest.Process, cmd string, n int) (p50, p99 time.Duration) {
	t := b.t
	rdb := b.cluster.Client(t)
	key, channel := b.rawTarget(master, cmd)
	ctx := t.Context()
	ps := b.rawSubscribe(ctx, rdb, cmd, channel)
	defer ps.Close()
	script := redis.NewScript(rawGrant)
	took := make([]time.Duration, 0, n)
	for range n {
		sent := time.Now()
		if err := script.Run(ctx, rdb, []string{key}, channel, "TOKEN0123456789ABCDEFGHIJKL", cmd).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			t.Fatalf("%s: no grant received: %v", cmd, err)
		}
		took = append(took, time.Since(sent))
	}
	slices.Sort(took)
	return took[n/2], took[n*99/100]
}

// rawTarget returns a key on master and the channel a grant for it goes
// to: for SPUBLISH one in the key's slot; for PUBLISH one on another
// master, as a Locker's one channel usually is.
func (b *handoffBench) rawTarget(master *redistest.Process, cmd string) (key, channel string) {
	for i := 0; ; i++ {
		key = lock.DefaultPrefix + "{raw:" + strconv.Itoa(i) + "}"
		if b.cluster.MasterOf(key) == master {
			break
		}
	}
	if cmd == "SPUBLISH" {
		return key, lock.DefaultPrefix + "waiters:raw" + key[strings.IndexByte(key, '{'):]
	}
	for i := 0; ; i++ {
		channel = lock.DefaultPrefix + "waiters:raw:" + strconv.Itoa(i)
		if b.cluster.MasterOf(channel) != master {
			return key, channel
		}
	}
}

// rawSubscribe subscribes to channel the way cmd needs, and waits for the
// confirmation.
func (b *handoffBench) rawSubscribe(ctx context.Context, rdb *redis.ClusterClient, cmd, channel string) *redis.PubSub {
	var ps *redis.PubSub
	if cmd == "SPUBLISH" {
		ps = rdb.SSubscribe(ctx, channel)
	} else {
		ps = rdb.Subscribe(ctx, channel)
	}
	if _, err := ps.Receive(ctx); err != nil {
		b.t.Fatal(err)
	}
	return ps
}

// rawGrant is the pub/sub part of a hand-off alone: set a key, publish a
// grant-sized message.
const rawGrant = `redis.call('SET', KEYS[1], ARGV[2], 'PX', 5000)
return redis.call(ARGV[3], ARGV[1], ARGV[2] .. '|1764518400000000|' .. KEYS[1])`

// rawPhase publishes grants from scripts on master's slots for d, with one
// subscriber listening. PUBLISH goes to a channel of another master, as a
// Locker's one channel usually is; SPUBLISH to a channel in the key's slot.
func (b *handoffBench) rawPhase(master *redistest.Process, cmd string, d time.Duration) handoffResult {
	t := b.t
	rdb := b.cluster.Client(t)
	key, channel := b.rawTarget(master, cmd)
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	ps := b.rawSubscribe(ctx, rdb, cmd, channel)
	defer ps.Close()
	var (
		wg       sync.WaitGroup
		received atomic.Int64
	)
	wg.Go(func() {
		for {
			if _, err := ps.Receive(ctx); err != nil {
				return
			}
			received.Add(1)
		}
	})
	script := redis.NewScript(rawGrant)
	before := b.snapshot()
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				err := script.Run(ctx, rdb, []string{key}, channel, "TOKEN0123456789ABCDEFGHIJKL", cmd).Err()
				if err != nil && ctx.Err() == nil {
					t.Errorf("%s: %v", cmd, err)
					return
				}
			}
		})
	}
	wg.Wait()
	after := b.snapshot()
	r := b.result(before, after, master, d)
	if r.handoffs > 0 && received.Load() < r.handoffs/2 {
		t.Errorf("%s: %d published, only %d received", cmd, r.handoffs, received.Load())
	}
	return r
}

// nodeStats is one node's INFO at a moment: CPU seconds (system and
// user) and calls of PUBLISH and SPUBLISH.
type nodeStats struct {
	cpu       float64
	published int64
}

func (b *handoffBench) snapshot() map[*redistest.Process]nodeStats {
	out := map[*redistest.Process]nodeStats{}
	for _, p := range b.nodes {
		info, err := b.admin[p].Info(b.t.Context(), "cpu", "commandstats").Result()
		if err != nil {
			b.t.Fatal(err)
		}
		var s nodeStats
		for line := range strings.SplitSeq(info, "\r\n") {
			name, value, _ := strings.Cut(line, ":")
			switch name {
			case "used_cpu_sys", "used_cpu_user":
				f, err := strconv.ParseFloat(value, 64)
				if err != nil {
					b.t.Fatal(err)
				}
				s.cpu += f
			case "cmdstat_publish", "cmdstat_spublish":
				calls, _, _ := strings.Cut(strings.TrimPrefix(value, "calls="), ",")
				n, err := strconv.ParseInt(calls, 10, 64)
				if err != nil {
					b.t.Fatal(err)
				}
				s.published += n
			}
		}
		out[p] = s
	}
	return out
}

// result turns two snapshots d apart into per-hand-off figures; owner,
// when not nil, is the one master that ran the phase's scripts.
func (b *handoffBench) result(before, after map[*redistest.Process]nodeStats, owner *redistest.Process, d time.Duration) handoffResult {
	var r handoffResult
	cpu := map[*redistest.Process]float64{}
	for _, p := range b.nodes {
		cpu[p] = max(after[p].cpu-before[p].cpu-b.idle[p]*d.Seconds(), 0)
		r.handoffs += after[p].published - before[p].published
		r.total += cpu[p]
	}
	if r.handoffs == 0 {
		return r
	}
	per := 1e6 / float64(r.handoffs)
	r.perSecond = float64(r.handoffs) / d.Seconds()
	r.total *= per
	if owner == nil {
		return r
	}
	replicas := b.cluster.ReplicasOf(owner)
	for _, p := range b.nodes {
		switch {
		case p == owner:
			r.owner += cpu[p] * per
		case slices.Contains(replicas, p):
			r.ownerReplica += cpu[p] * per
		default:
			r.others += cpu[p] * per
		}
	}
	return r
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
