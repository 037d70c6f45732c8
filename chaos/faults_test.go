package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"time"

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
)

// step is one planned fault.
type step struct {
	kind  faultKind
	gap   time.Duration // after the previous fault ended (the first: after the load started)
	slot  int           // which worker
	pause time.Duration // faultPause only
}

// plan draws n faults of kinds (in an order drawn too, when mixed) from
// seed: the seed alone repeats the schedule.
func plan(seed uint64, kinds []faultKind, n int) []step {
	r := rand.New(rand.NewPCG(seed, 0x6661756c74)) //nolint:gosec // G404: a seeded schedule, reproducible by CHAOS_SEED.
	steps := make([]step, n)
	for i := range steps {
		steps[i] = step{
			kind:  kinds[i%len(kinds)],
			gap:   time.Second + time.Duration(r.Int64N(int64(2*time.Second))),
			slot:  r.IntN(workers),
			pause: 2*shopLockTTL + time.Duration(r.Int64N(int64(shopLockTTL))),
		}
	}
	r.Shuffle(len(steps), func(i, j int) { steps[i].kind, steps[j].kind = steps[j].kind, steps[i].kind })
	return steps
}

// fault is one fault as it happened.
type fault struct {
	step
	at  time.Time // the signal was sent
	end time.Time // the worker was back: its replacement ready, or SIGCONT sent
	// held is the order resources the worker's jobs held at the signal
	// (empty: it was between jobs for all of midJobWait).
	held []string
}

// midJobWait bounds the wait for the chosen worker to hold a lock, so that
// a fault lands mid-job when the load allows.
const midJobWait = 2 * time.Second

// inject runs steps one after the other against f, stopping early when
// ctx ends, and returns what happened.
func inject(ctx context.Context, f *fleet, locker *lock.Locker, steps []step) ([]fault, error) {
	var done []fault
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return done, nil
		case <-time.After(s.gap):
		}
		p := f.procs[s.slot]
		fl := fault{step: s, held: waitHolding(ctx, locker, p)}
		fl.at = time.Now()
		switch s.kind {
		case faultKill:
			if err := p.crash(); err != nil {
				return done, err
			}
			if err := p.start(); err != nil {
				return done, err
			}
			if err := p.waitReady(ctx, 30*time.Second); err != nil {
				return done, err
			}
		case faultPause:
			if err := p.signal(syscall.SIGSTOP); err != nil {
				return done, err
			}
			select {
			case <-ctx.Done():
			case <-time.After(s.pause):
			}
			if err := p.signal(syscall.SIGCONT); err != nil {
				return done, err
			}
		}
		fl.end = time.Now()
		done = append(done, fl)
	}
	return done, nil
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
	s := fmt.Sprintf("%s worker %d at +%s for %s", f.kind, f.slot, f.at.Format("15:04:05.000"), f.end.Sub(f.at).Round(time.Millisecond))
	if len(f.held) == 0 {
		s += " (between jobs)"
	} else {
		s += fmt.Sprintf(" holding %v", f.held)
	}
	return s
}
