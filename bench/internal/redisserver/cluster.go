package redisserver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clusterSettleTimeout bounds redis-cli's cluster creation and the wait
// until every node reports cluster_state:ok; it takes about a second.
const clusterSettleTimeout = 30 * time.Second

// Cluster is a Redis Cluster of masters only, each a Server in cluster
// mode on free 127.0.0.1 ports, joined by redis-cli --cluster create.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts masters redis-servers (bin) in cluster mode, joins
// them with cli (redis-cli) and waits until every node reports
// cluster_state:ok with all 16384 slots assigned. No replicas: a benchmark
// measures the masters' work, and a replica would only add its copy.
func StartCluster(ctx context.Context, bin, cli string, masters int) (_ *Cluster, err error) {
	if masters < 3 {
		return nil, fmt.Errorf("a cluster of %d masters: redis-cli --cluster create needs at least 3", masters)
	}
	c := &Cluster{}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	for range masters {
		s, err := startClusterNode(ctx, bin)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	cctx, cancel := context.WithTimeout(ctx, clusterSettleTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	//nolint:gosec // G204: cli is the user's -redis-cli flag; the arguments are our own addresses.
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	return c, c.awaitOK(cctx)
}

// startClusterNode is Start for a cluster node, which also needs a free
// cluster bus port: the default, its port + 10000, may be taken or past
// 65535.
func startClusterNode(ctx context.Context, bin string) (*Server, error) {
	var errs []error
	for range spawnAttempts {
		s, err := spawnClusterNode(ctx, bin)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start %s in cluster mode: %w", bin, errors.Join(errs...))
}

func spawnClusterNode(ctx context.Context, bin string) (*Server, error) {
	port, err := FreePort(ctx)
	if err != nil {
		return nil, err
	}
	bus, err := FreePort(ctx)
	if err != nil {
		return nil, err
	}
	if bus == port {
		return nil, fmt.Errorf("the kernel gave port %d twice", port)
	}
	return spawnOn(ctx, bin, port, func(dir string) []string {
		return []string{
			"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		}
	})
}

// awaitOK polls every node until each reports cluster_state:ok and all
// slots assigned.
func (c *Cluster) awaitOK(ctx context.Context) error {
	for {
		var notOK error
		for _, s := range c.nodes {
			info, err := s.admin.ClusterInfo(ctx).Result()
			switch {
			case err != nil:
				notOK = fmt.Errorf("%s: CLUSTER INFO: %w", s.addr, err)
			case !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384"):
				notOK = fmt.Errorf("%s: not ok yet:\n%s", s.addr, info)
			}
		}
		if notOK == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ok after %s: %w", clusterSettleTimeout, notOK)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Nodes returns the masters, in start order.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Addrs returns every node's host:port.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.addr
	}
	return addrs
}

// Stop kills every node by pid.
func (c *Cluster) Stop() error {
	var errs []error
	for _, s := range c.nodes {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}
