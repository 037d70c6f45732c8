package gateway

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// fault is what a call's draw decided about the simulated outage.
type fault int

const (
	faultNone   fault = iota
	faultBefore       // the request is lost: nothing runs
	faultAfter        // the response is lost: the script ran
)

// pcgStream is the second PCG seed word; Config.Seed is the first.
const pcgStream = 0x7475726e7374696c // "turnstil"

// faults draws each call's latency and outage from one seeded PCG.
type faults struct {
	latency time.Duration
	rate    float64

	mu  sync.Mutex
	rng *rand.Rand
}

func newFaults(cfg Config) *faults {
	return &faults{
		latency: cfg.Latency,
		rate:    cfg.FailureRate,
		//nolint:gosec // G404: reproducible simulation draws, not secrets; IDs use crypto/rand
		rng: rand.New(rand.NewPCG(cfg.Seed, pcgStream)),
	}
}

// draw decides one call's fault and latency. It always takes two numbers
// from the generator, so the sequence of faults a seed gives does not depend
// on Latency.
func (f *faults) draw() (fault, time.Duration) {
	f.mu.Lock()
	u, v := f.rng.Float64(), f.rng.Float64()
	f.mu.Unlock()
	delay := time.Duration(v * float64(2*f.latency))
	switch {
	case u < f.rate/2:
		return faultBefore, delay
	case u < f.rate:
		return faultAfter, delay
	}
	return faultNone, delay
}

// sleep waits d, or returns the context's cause when ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
