package main

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// roundTrips is a go-redis dial hook that counts requests: every write a
// client makes to Redis, on every connection it dials, its subscription
// connections included. go-redis writes a command or a pipeline with one
// flush of its buffer, so a write is a request; messages Redis pushes to a
// subscriber are not.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &r.n}, nil
	}
}

func (*roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (*roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// processes are the clients of one library's run: one per simulated
// process, all with the same options (go-redis defaults) and all counted by
// one hook.
type processes struct {
	clients []*redis.Client
	trips   *roundTrips
}

func newProcesses(addr string, n int) *processes {
	p := &processes{trips: &roundTrips{}}
	for range n {
		c := redis.NewClient(&redis.Options{Addr: addr})
		c.AddHook(p.trips)
		p.clients = append(p.clients, c)
	}
	return p
}

func (p *processes) close() error {
	var errs []error
	for _, c := range p.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
