package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

// faultKind is what is done to a worker.
type faultKind string

const (
	// faultKill is SIGKILL mid-job, then a replacement process, as an
	// orchestrator starts one.
	faultKill faultKind = "sigkill"
	// faultPause is SIGSTOP for 2-3 lock TTLs, then SIGCONT: the process
	// wakes believing it still holds its locks.
	faultPause faultKind = "sigstop"

	// The network faults act on the worker's proxy (fleetOptions.proxied)
	// for a while, then clear it; the process runs on throughout.

	// faultLatency delays every reply from Redis by 100-400 ms for 2-3 s:
	// jobs hold their locks longer, refreshes and releases arrive late.
	faultLatency faultKind = "latency"
	// faultReset cuts every connection with an RST for about a second,
	// the new ones too: commands in flight fail, and may or may not have
	// run.
	faultReset faultKind = "reset"
	// faultBlackhole swallows every byte to Redis for 2-3 lock TTLs,
	// keeping the connections open (half-open): the worker learns only by
	// its own timeouts, its leases run out, and Redis hands its locks on.
	faultBlackhole faultKind = "blackhole"
	// faultSlowClose has Redis close every connection of the worker (CLIENT
	// KILL) while closes take 0.5-2 s to cross the proxy, either way, for
	// 2-3 s: the worker's commands on a closed connection wait for the
	// close to arrive, and a connection the worker gives up on still looks
	// open to Redis (a subscriber that no longer listens).
	faultSlowClose faultKind = "slowclose"

	// The restarts act on the run's redis-server, so on every worker at
	// once; the worker the step names only times the fault, mid-job.

	// faultCrash kills redis-server and starts it again from its
	// append-only file cut back a second, as a machine crash does under
	// appendfsync everysec: Redis loses what it acknowledged in that
	// second, the locks and fences of it too.
	faultCrash faultKind = "crash"
	// faultWipe restarts redis-server without its files, as a server
	// without persistence comes back: empty. The suite then restocks the
	// catalogue, as an operator would, and the shop goes on.
	faultWipe faultKind = "wipe"
)

// redisKinds are the faults that restart Redis.
var redisKinds = []faultKind{faultCrash, faultWipe}

// isNet says whether k acts on the worker's proxy rather than its process.
func (k faultKind) isNet() bool {
	switch k {
	case faultLatency, faultReset, faultBlackhole, faultSlowClose:
		return true
	}
	return false
}

// step is one planned fault.
type step struct {
	kind faultKind
	gap  time.Duration // after the previous fault ended (the first: after the load started)
	slot int           // which worker
	// hold is how long the fault lasts: the pause, or the time the proxy
	// misbehaves (0 for a kill).
	hold time.Duration
	// delay is faultLatency's added latency, or faultSlowClose's delay of
	// every close.
	delay time.Duration
}

// plan draws n faults of kinds (in an order drawn too, when mixed) from
// seed: the seed alone repeats the schedule. With fewer faults than kinds,
// which kinds is drawn too.
func plan(seed uint64, kinds []faultKind, n int) []step {
	r := rand.New(rand.NewPCG(seed, 0x6661756c74)) //nolint:gosec // G404: a seeded schedule, reproducible by CHAOS_SEED.
	// The network faults draw from a stream of their own, so that a seed's
	// kills and pauses stayed what they were before there were any.
	nr := rand.New(rand.NewPCG(seed, 0x6e6574)) //nolint:gosec // G404: as r.
	if n < len(kinds) {
		kinds = slices.Clone(kinds)
		nr.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	}
	steps := make([]step, n)
	lasting := make([]time.Duration, n) // 2-3 lock TTLs
	for i := range steps {
		steps[i] = step{
			kind: kinds[i%len(kinds)],
			gap:  time.Second + time.Duration(r.Int64N(int64(2*time.Second))),
			slot: r.IntN(workers),
		}
		lasting[i] = 2*shopLockTTL + time.Duration(r.Int64N(int64(shopLockTTL)))
	}
	r.Shuffle(len(steps), func(i, j int) { steps[i].kind, steps[j].kind = steps[j].kind, steps[i].kind })
	for i := range steps {
		s := &steps[i]
		brief := 2*time.Second + time.Duration(nr.Int64N(int64(time.Second)))
		latency := 100*time.Millisecond + time.Duration(nr.Int64N(int64(300*time.Millisecond)))
		reset := 800*time.Millisecond + time.Duration(nr.Int64N(int64(400*time.Millisecond)))
		closing := 500*time.Millisecond + time.Duration(nr.Int64N(int64(1500*time.Millisecond)))
		switch s.kind {
		case faultPause, faultBlackhole:
			s.hold = lasting[i]
		case faultLatency:
			s.hold, s.delay = brief, latency
		case faultReset:
			s.hold = reset
		case faultSlowClose:
			s.hold, s.delay = brief, closing
		}
	}
	return steps
}

// fault is one fault as it happened.
type fault struct {
	step
	at  time.Time // the signal was sent, or the proxy began to misbehave
	end time.Time // the worker was back: its replacement ready, SIGCONT sent, or the proxy cleared
	// held is the order resources the worker's jobs held at the signal
	// (empty: it was between jobs for all of midJobWait).
	held []string
	// recovery is, once measured (result.measure), how long after end
	// the last of held had a task completed again; recovered says it was
	// measured.
	recovery  time.Duration
	recovered bool
}

// midJobWait bounds the wait for the chosen worker to hold a lock, so that
// a fault lands mid-job when the load allows.
const midJobWait = 2 * time.Second

// target is what the faults act on: the fleet, a Locker to see what its
// workers hold, Redis as the test reaches it (directly, not through a
// worker's proxy), and what restarts it (nil: the run has no restarts).
type target struct {
	fleet     *fleet
	locker    *lock.Locker
	rdb       *redis.Client
	restarter *restarter
}

// inject runs steps one after the other against tg, stopping early when
// ctx ends, and returns what happened. It runs in its own goroutine, so
// it returns errors instead of failing the test.
func inject(ctx context.Context, tg target, steps []step) ([]fault, error) {
	var done []fault
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return done, nil
		case <-time.After(s.gap):
		}
		p := tg.fleet.procs[s.slot]
		fl := fault{step: s, held: waitHolding(ctx, tg.locker, p)}
		fl.at = time.Now()
		if err := strike(ctx, tg, p, s); err != nil {
			return done, fmt.Errorf("chaos: %s worker %d: %w", s.kind, s.slot, err)
		}
		fl.end = time.Now()
		done = append(done, fl)
	}
	return done, nil
}

// strike does one fault to p and returns once it is over: p is back, or
// its proxy is plain again.
func strike(ctx context.Context, tg target, p *proc, s step) error {
	if s.kind.isNet() && p.proxy == nil {
		return fmt.Errorf("worker %d has no proxy: start the fleet with fleetOptions.proxied", p.slot)
	}
	if slices.Contains(redisKinds, s.kind) && tg.restarter == nil {
		return fmt.Errorf("%s: the run's Redis has no restarter", s.kind)
	}
	switch s.kind {
	case faultKill:
		if err := p.crash(); err != nil {
			return err
		}
		if err := p.start(); err != nil {
			return err
		}
		return p.waitReady(ctx, 30*time.Second)
	case faultPause:
		if err := p.signal(syscall.SIGSTOP); err != nil {
			return err
		}
		sleep(ctx, s.hold)
		return p.signal(syscall.SIGCONT)
	case faultLatency:
		return holdNet(ctx, p, s.hold, func() error { return p.proxy.Latency(s.delay) })
	case faultReset:
		return holdNet(ctx, p, s.hold, func() error { return p.proxy.Reset(0) })
	case faultBlackhole:
		return holdNet(ctx, p, s.hold, p.proxy.Blackhole)
	case faultCrash:
		tg.restarter.crash(ctx)
		return nil
	case faultWipe:
		return tg.restarter.wipe(ctx)
	case faultSlowClose:
		return holdNet(ctx, p, s.hold, func() error {
			if err := p.proxy.SlowClose(s.delay); err != nil {
				return err
			}
			// Closes now cross the proxy late: Redis drops the worker.
			return killClients(ctx, tg.rdb, p.clientName())
		})
	}
	return fmt.Errorf("unknown fault kind %q", s.kind)
}

// holdNet turns p's proxy bad with on, waits d (or until ctx ends), and
// clears it; the proxy is cleared even when on fails half way.
func holdNet(ctx context.Context, p *proc, d time.Duration, on func() error) error {
	defer p.proxy.Clear(context.WithoutCancel(ctx)) // cleared even when the run ends mid-fault
	if err := on(); err != nil {
		return err
	}
	sleep(ctx, d)
	return nil
}

// killClients closes, from Redis's side, every connection named name
// (CLIENT SETNAME, which go-redis sends for the worker's client_name).
func killClients(ctx context.Context, rdb *redis.Client, name string) error {
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		return err
	}
	killed := 0
	for line := range strings.Lines(list) {
		var id, n string
		for field := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(field, "=")
			switch k {
			case "id":
				id = v
			case "name":
				n = v
			}
		}
		if n != name {
			continue
		}
		// One by one: CLIENT KILL has no filter by name.
		if err := rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil && !strings.Contains(err.Error(), "No such client") {
			return fmt.Errorf("client kill %s: %w", id, err)
		}
		killed++
	}
	if killed == 0 {
		return fmt.Errorf("no connection named %s at Redis", name)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// freshHold is how recently a job must have set out to take its lock for
// a fault to strike it: the shop's jobs take about 25 ms (a 20 ms gateway
// call between a fenced read and a commit), so a job this young is most
// likely still before its commit.
const freshHold = 15 * time.Millisecond

// waitHolding polls the lock keys until one of p's jobs has just taken
// its order lock (the guard names the worker's pid and the time in the
// owner), for up to midJobWait, and returns the resources p holds; at the
// deadline, whatever p holds, or nothing.
func waitHolding(ctx context.Context, locker *lock.Locker, p *proc) []string {
	p.mu.Lock()
	pid := strconv.Itoa(p.cmd.Process.Pid)
	p.mu.Unlock()
	deadline := time.Now().Add(midJobWait)
	for {
		var held []string
		fresh := false
		for cursor := uint64(0); ; {
			hs, next, err := locker.Holdings(ctx, cursor, 1000)
			if err != nil {
				break
			}
			for _, h := range hs {
				if o := middleware.ParseOwner(h.Owner); strings.HasSuffix(o.Worker, ":"+pid) {
					held = append(held, h.Resource)
					fresh = fresh || time.Since(o.Since) < freshHold
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		if fresh || time.Now().After(deadline) {
			return held
		}
		select {
		case <-ctx.Done():
			return held
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// String is a fault for logs and failure messages.
func (f fault) String() string {
	s := fmt.Sprintf("%s worker %d at +%s for %s", f.kind, f.slot, f.at.Format(stamp), f.end.Sub(f.at).Round(time.Millisecond))
	switch f.kind {
	case faultLatency:
		s += fmt.Sprintf(" (+%s a reply)", f.delay.Round(time.Millisecond))
	case faultSlowClose:
		s += fmt.Sprintf(" (closes %s late)", f.delay.Round(time.Millisecond))
	}
	if len(f.held) == 0 {
		s += " (between jobs)"
	} else {
		s += fmt.Sprintf(" holding %v", f.held)
	}
	return s
}
