// Package autopipe batches the Lua scripts that concurrent callers send
// to one Redis deployment into pipelines.
package autopipe

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A Pipe batches the scripts that concurrent callers send to one Redis
// deployment. For scripts this small, most of a round trip's cost, on both
// sides, is the write, the read and the wake-ups around them, so under load
// many calls should share one of each, the way rueidis pipelines
// automatically. A lone caller, or two, should pay nothing for it.
//
// So a Pipe adapts. While nothing queues, a caller sends its script itself,
// exactly as without batching, with up to two requests in flight. A caller
// that finds both out queues, and the queue leaves as one pipeline when a
// flight returns. Once a queue has formed the Pipe keeps a single flight,
// whose batches grow with the load, until a flight returns to an empty
// queue.
//
// Batched scripts run on a background context: go-redis's hooks see one
// pipeline for the lot, and its read and write timeouts bound it. A caller
// whose context ends while its call is still queued leaves without sending
// it; one whose call is in flight leaves at once too, as go-redis itself
// does when a deadline cuts a read short, and the script may still have run.
type Pipe struct {
	client redis.UniversalClient

	mu      sync.Mutex
	flying  int  // requests in flight
	queued  bool // the last flight to return found calls queued
	pending []*call
}

type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// New returns a Pipe that sends scripts through client.
func New(client redis.UniversalClient) *Pipe { return &Pipe{client: client} }

// Run runs s as s.Run would, in a batch if others are in flight.
func (p *Pipe) Run(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	p.mu.Lock()
	if p.flying < 2 && !p.queued || p.flying == 0 {
		p.flying++
		p.mu.Unlock()
		cmd := s.Run(ctx, p.client, keys, args...)
		if batch := p.take(); batch != nil {
			go p.fly(batch) //nolint:gosec,contextcheck // a batch carries many callers' calls; none's context is its own
		}
		return cmd
	}
	c := &call{script: s, keys: keys, args: args, done: make(chan struct{})}
	p.pending = append(p.pending, c)
	p.mu.Unlock()
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		p.mu.Lock()
		p.pending = slices.DeleteFunc(p.pending, func(q *call) bool { return q == c })
		p.mu.Unlock()
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(context.Cause(ctx))
		return cmd
	}
}

// take returns the calls that queued up during the last flight, or nil
// and lands the flight when none did or another flight is still out to
// carry them.
func (p *Pipe) take() []*call {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued = len(p.pending) > 0
	if !p.queued || p.flying > 1 {
		p.flying--
		return nil
	}
	batch := p.pending
	p.pending = nil
	return batch
}

// fly sends batches until a flight returns with nothing queued behind it.
func (p *Pipe) fly(batch []*call) {
	ctx := context.Background()
	for ; batch != nil; batch = p.take() {
		if len(batch) == 1 {
			c := batch[0]
			c.cmd = c.script.Run(ctx, p.client, c.keys, c.args...)
			close(c.done)
			continue
		}
		pipe := p.client.Pipeline()
		for _, c := range batch {
			c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx) // every call reads its own error
		for _, c := range batch {
			if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
				// Redis restarted or flushed its scripts: Run loads them again.
				c.cmd = c.script.Run(ctx, p.client, c.keys, c.args...)
			}
			close(c.done)
		}
	}
}
