package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"time"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// memoryChunk is how many orders are checked out between progress lines.
const memoryChunk = 10_000

// memory is what a shop keeps in Redis per order once every job of its
// orders has finished.
type memory struct {
	Backend string `json:"backend"`
	Workers int    `json:"workers"`
	Orders  int    `json:"orders"`
	// Paid orders were paid by fleetbench itself (jobs.Service.Confirm, as
	// a worker would), to spare the run 85,000 tasks; the rest were revoked
	// when their (cut short) payment window closed.
	Paid          int         `json:"paid"`
	Before        []nodeUsage `json:"before"`
	After         []nodeUsage `json:"after"`
	BytesPerOrder float64     `json:"bytes_per_order"`
	// KeyKinds counts the keys after the step by kind: each key with its
	// order ID, event and other numbers replaced (see keyKind).
	KeyKinds     map[string]int64 `json:"key_kinds"`
	KeysPerOrder float64          `json:"keys_per_order"`
	Seconds      float64          `json:"seconds"`
	InvariantsOK bool             `json:"invariants_ok"`
}

// memoryStep checks out cfg.ordersForMemory orders, pays 85 % of them
// in process, has the workers run every checkout's revoke (as if the
// payment window had closed), waits until every job is done, and reads
// used_memory and DBSIZE on every node against the empty shop's.
func (b *bench) memoryStep(ctx context.Context, be *backend) (mem memory, err error) {
	began := time.Now()
	mem = memory{Backend: be.name, Workers: b.cfg.memoryWorkers, Orders: b.cfg.ordersForMemory}
	if err := be.flush(ctx); err != nil {
		return mem, err
	}
	s, err := openShop(ctx, be.url)
	if err != nil {
		return mem, err
	}
	defer func() { err = errors.Join(err, s.close()) }()
	if err := s.addTicketTypes(ctx); err != nil {
		return mem, err
	}
	fleet, err := startWorkers(ctx, b.bin, b.dir, be.url, b.cfg.memoryWorkers, b.cfg.concurrency)
	if err != nil {
		return mem, err
	}
	defer func() { err = errors.Join(err, stopWorkers(fleet)) }()
	base, err := s.processed(ctx)
	if err != nil {
		return mem, err
	}
	if mem.Before, err = be.usage(ctx); err != nil {
		return mem, err
	}
	rnd := rand.New(rand.NewPCG(b.cfg.seed, 0x6d656d)) //nolint:gosec // G404: a seeded workload, reproducible by -seed.
	for start := 0; start < mem.Orders; start += memoryChunk {
		cs := make([]checkout, min(memoryChunk, mem.Orders-start))
		for i := range cs {
			cs[i] = checkout{
				id:    fmt.Sprintf("m-%07d", start+i),
				items: []ledger.Item{{TicketType: ticketTypeID(rnd.IntN(ticketTypes)), Quantity: 1 + rnd.Int64N(3)}},
			}
		}
		for i := range cs {
			cs[i].paid = rnd.Float64() < 0.85
		}
		if _, err := s.reserve(ctx, cs); err != nil {
			return mem, err
		}
		for _, c := range cs {
			if c.paid {
				mem.Paid++
			}
		}
		progress("memory: %d of %d orders checked out, %d paid (%s)", start+len(cs), mem.Orders, mem.Paid, time.Since(began).Round(time.Second))
	}
	// The checkouts' revokes, due in an hour, run now: those of paid
	// orders find nothing to do, the others return their tickets.
	revokes, err := s.inspect.RunAllScheduledTasks("default")
	if err != nil {
		return mem, fmt.Errorf("run the scheduled revokes: %w", err)
	}
	if _, err := s.awaitProcessed(ctx, base, int64(revokes), b.cfg.timeout); err != nil {
		return mem, err
	}
	progress("memory: %d revokes run (%s)", revokes, time.Since(began).Round(time.Second))
	if err := s.leftOver(); err != nil {
		return mem, err
	}
	if mem.After, err = be.usage(ctx); err != nil {
		return mem, err
	}
	var bytes, keys int64
	for i := range mem.After {
		bytes += mem.After[i].Bytes - mem.Before[i].Bytes
		keys += mem.After[i].Keys - mem.Before[i].Keys
	}
	mem.BytesPerOrder = float64(bytes) / float64(mem.Orders)
	mem.KeyKinds = map[string]int64{}
	for _, n := range be.nodes {
		if err := n.EachKey(ctx, func(k string) { mem.KeyKinds[keyKind(k)]++ }); err != nil {
			return mem, err
		}
	}
	mem.KeysPerOrder = float64(keys) / float64(mem.Orders)
	progress("memory: %.0f bytes and %.2f keys per order; checking the invariants", mem.BytesPerOrder, mem.KeysPerOrder)
	rep, err := s.check(ctx)
	if err != nil {
		return mem, fmt.Errorf("check invariants: %w", err)
	}
	mem.InvariantsOK = rep.OK
	mem.Seconds = time.Since(began).Seconds()
	progress("memory: invariants checked (%s)", time.Since(began).Round(time.Second))
	if !rep.OK {
		return mem, fmt.Errorf("invariants violated: %+v", rep.Violations[:min(5, len(rep.Violations))])
	}
	return mem, nil
}

var (
	orderIDs = regexp.MustCompile(`m-[0-9]{7}`)
	numbers  = regexp.MustCompile(`[0-9]+`)
)

// keyKind names what a key is for: its order ID becomes <order> and any
// other run of digits N, so that "turnstile:lock:{order:m-0000042}:fence"
// counts as "turnstile:lock:{order:<order>}:fence".
func keyKind(key string) string {
	return numbers.ReplaceAllString(orderIDs.ReplaceAllString(key, "<order>"), "N")
}
