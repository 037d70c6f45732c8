package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

// backend is where a fleet's jobs and locks live: one redis-server, or
// the masters of a Redis Cluster.
type backend struct {
	name  string // "single" or "cluster"
	url   string // TURNSTILE_REDIS_URL
	nodes []*redisserver.Server
	stop  func() error
}

func startSingle(ctx context.Context, bin string) (*backend, error) {
	srv, err := redisserver.Start(ctx, bin)
	if err != nil {
		return nil, err
	}
	return &backend{name: "single", url: "redis://" + srv.Addr(), nodes: []*redisserver.Server{srv}, stop: srv.Stop}, nil
}

func startCluster(ctx context.Context, bin, cli string, masters int) (*backend, error) {
	c, err := redisserver.StartCluster(ctx, bin, cli, masters)
	if err != nil {
		return nil, err
	}
	return &backend{
		name: "cluster", url: "redis-cluster://" + strings.Join(c.Addrs(), ","),
		nodes: c.Nodes(), stop: c.Stop,
	}, nil
}

// flush empties every node, so that each run starts from nothing.
func (b *backend) flush(ctx context.Context) error {
	var errs []error
	for _, n := range b.nodes {
		errs = append(errs, n.FlushAll(ctx))
	}
	return errors.Join(errs...)
}

// cpu returns each node's CPU time so far (INFO cpu).
func (b *backend) cpu(ctx context.Context) ([]time.Duration, error) {
	out := make([]time.Duration, len(b.nodes))
	for i, n := range b.nodes {
		d, err := n.CPU(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s node %s: %w", b.name, n.Addr(), err)
		}
		out[i] = d
	}
	return out, nil
}

// nodeUsage is one node's used_memory and key count.
type nodeUsage struct {
	Addr  string `json:"addr"`
	Bytes int64  `json:"used_memory"`
	Keys  int64  `json:"keys"`
}

func (b *backend) usage(ctx context.Context) ([]nodeUsage, error) {
	out := make([]nodeUsage, len(b.nodes))
	for i, n := range b.nodes {
		mem, err := n.Memory(ctx)
		if err != nil {
			return nil, err
		}
		keys, err := n.DBSize(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = nodeUsage{Addr: n.Addr(), Bytes: mem, Keys: keys}
	}
	return out, nil
}
