package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// masterName is the name the sentinels monitor the master under.
	masterName = "mymaster"
	// downAfter is the sentinels' down-after-milliseconds: how long the
	// master may not answer before a sentinel thinks it down. Redis's
	// default is 30 s; a second keeps KillMaster to a few seconds.
	downAfter = time.Second
	// sentinelFailoverTimeout is the sentinels' failover-timeout. A
	// failover that stalls, or an election that no sentinel wins, is
	// retried after twice this; the default is 3 minutes.
	sentinelFailoverTimeout = 3 * time.Second
)

// SentinelDeployment is a master, its replica and three sentinels that
// monitor them, started by [Sentinel] for one test, all on 127.0.0.1.
//
// Its methods report failures with Fatalf on the test given to Sentinel, so
// call them from the test's own goroutine.
type SentinelDeployment struct {
	t         testing.TB
	sentinels []*Process

	mu      sync.Mutex
	admin   []*redis.SentinelClient // the fixture's own, one per sentinel
	master  *Process
	replica *Process // nil once KillMaster has promoted it
}

// Sentinel starts a master ([Server]), one replica of it ([Replica]) and
// three sentinels (redis-server --sentinel) that monitor the master with a
// quorum of two, and waits until every sentinel sees the master up, its
// replica, and the two other sentinels. It fails the test when that takes
// longer than settleTimeout, quoting the sentinels' logs. Every process is
// killed when the test ends.
//
// Without redis-server on PATH, Sentinel skips the test or, when CI is
// true, fails it, as [Server] does.
func Sentinel(tb testing.TB) *SentinelDeployment {
	tb.Helper()
	master := Server(tb)
	d := &SentinelDeployment{t: tb, master: master, replica: Replica(tb, master)}
	for range 3 {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		// The sentinel rewrites this file as it learns the deployment;
		// each has its own, as each must have its own ID.
		text := fmt.Sprintf(`sentinel monitor %[1]s 127.0.0.1 %[2]d 2
sentinel down-after-milliseconds %[1]s %[3]d
sentinel failover-timeout %[1]s %[4]d
`, masterName, master.port, downAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			tb.Fatalf("redistest: write %s: %v", conf, err)
		}
		p := start(tb, &Process{t: tb, bin: master.bin, dir: dir, conf: conf, args: []string{"--sentinel"}})
		d.sentinels = append(d.sentinels, p)
		sc := redis.NewSentinelClient(&redis.Options{
			Addr:         p.Addr(),
			DialTimeout:  adminTimeout,
			ReadTimeout:  adminTimeout,
			WriteTimeout: adminTimeout,
			MaxRetries:   -1,
			PoolSize:     1,
		})
		closeAtEnd(tb, p.Addr(), sc)
		d.admin = append(d.admin, sc)
	}
	d.wait("see the master, its replica and each other", func(ctx context.Context, sc *redis.SentinelClient) error {
		m, err := sc.Master(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("SENTINEL MASTER: %w", err)
		}
		if m["flags"] != "master" || m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
			return fmt.Errorf("SENTINEL MASTER says flags=%s num-slaves=%s num-other-sentinels=%s, want master, 1, 2",
				m["flags"], m["num-slaves"], m["num-other-sentinels"])
		}
		replicas, err := sc.Replicas(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("SENTINEL REPLICAS: %w", err)
		}
		// A replica the sentinel has no link to could not be promoted.
		if len(replicas) != 1 || replicas[0]["flags"] != "slave" || replicas[0]["master-link-status"] != "ok" {
			return fmt.Errorf("SENTINEL REPLICAS says %v, want one slave with its link ok", replicas)
		}
		return nil
	})
	return d
}

// MasterName returns the name the sentinels know the master by, for
// [redis.FailoverOptions].
func (d *SentinelDeployment) MasterName() string { return masterName }

// SentinelAddrs returns the host:port of the three sentinels.
func (d *SentinelDeployment) SentinelAddrs() []string {
	addrs := make([]string, len(d.sentinels))
	for i, p := range d.sentinels {
		addrs[i] = p.Addr()
	}
	return addrs
}

// Sentinels returns the three sentinel processes.
func (d *SentinelDeployment) Sentinels() []*Process { return d.sentinels }

// Master returns the current master: the one Sentinel started, or after
// KillMaster the replica that replaced it.
func (d *SentinelDeployment) Master() *Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.master
}

// Replica returns the master's replica, or nil after KillMaster: the
// promoted replica has none.
func (d *SentinelDeployment) Replica() *Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.replica
}

// Client returns a go-redis failover client with default options that
// asks the sentinels for the master. It is closed when tb ends, before the
// processes are killed if tb is the test given to [Sentinel] or one of its
// subtests. It follows a failover itself, though commands sent while the
// master is down fail until the sentinels have promoted the replica.
func (d *SentinelDeployment) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    masterName,
		SentinelAddrs: d.SentinelAddrs(),
	})
	closeAtEnd(tb, "sentinel master "+masterName, rdb)
	return rdb
}

// KillMaster kills the master with SIGKILL, as a crash would, and waits
// until every sentinel names the replica as the master (SENTINEL
// GET-MASTER-ADDR-BY-NAME) and the replica reports role master. That takes
// downAfter, an election and a promotion: a few seconds. It returns the new
// master and fails the test when there is no replica or the failover does
// not finish within settleTimeout. Writes the master acknowledged but had
// not yet passed on are lost, as in production.
func (d *SentinelDeployment) KillMaster() *Process {
	d.t.Helper()
	d.mu.Lock()
	master, replica := d.master, d.replica
	d.mu.Unlock()
	if replica == nil {
		d.t.Fatalf("redistest: kill master %s: it has no replica to take over", master.Addr())
	}
	master.Stop()
	rc := adminClient(d.t, replica.Addr())
	d.wait("promote "+replica.Addr()+" after "+master.Addr()+" was killed", func(ctx context.Context, sc *redis.SentinelClient) error {
		addr, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		if err != nil {
			return fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME: %w", err)
		}
		if got := strings.Join(addr, ":"); got != replica.Addr() {
			return fmt.Errorf("names %s as the master", got)
		}
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err != nil {
			return fmt.Errorf("replica %s: ROLE: %w", replica.Addr(), err)
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("replica %s: ROLE answered %v", replica.Addr(), role)
		}
		return nil
	})
	d.mu.Lock()
	d.master, d.replica = replica, nil
	d.mu.Unlock()
	return replica
}

// wait polls every sentinel with check until it passes for all of them. It
// fails the test, quoting the last failure and the sentinels' logs, after
// settleTimeout.
func (d *SentinelDeployment) wait(what string, check func(context.Context, *redis.SentinelClient) error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for {
		var err error
		for i, sc := range d.admin {
			if err = check(ctx, sc); err != nil {
				err = fmt.Errorf("sentinel %s: %w", d.sentinels[i].Addr(), err)
				break
			}
		}
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			d.t.Fatalf("redistest: sentinels did not %s within %s: %v\n%s", what, settleTimeout, err, d.logs())
		case <-time.After(probeInterval):
		}
	}
}

// logs returns the end of every sentinel's log, for a failure message.
func (d *SentinelDeployment) logs() string {
	var b strings.Builder
	for _, p := range d.sentinels {
		fmt.Fprintf(&b, "--- log of sentinel %s:\n%s\n", p.Addr(), readTail(p.logPath()))
	}
	return b.String()
}
