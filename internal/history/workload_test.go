package history_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

const (
	workTTL   = 300 * time.Millisecond
	workStall = workTTL * 5 / 2 // a pause past the TTL, as GC or SIGSTOP makes one
	// workStock is the ticket type's capacity: more than the run sells.
	workStock  = 1_000_000
	workType   = "gold"
	workOrders = 3
	workers    = 4 // goroutines per process
	// The children's history file and run length.
	workFileEnv = "TURNSTILE_HISTORY_WORKLOAD_FILE"
	workRunEnv  = "TURNSTILE_HISTORY_WORKLOAD_RUN"
)

// TestHistory_Workload runs three processes of four workers each that
// lock an order (and, half the time, the ticket type's inventory), read
// them with their fences, add one to the order's Paid (and take a ticket)
// and commit, on three orders; one operation in eight stalls past its
// lock's TTL between read and commit, so that its commit comes late. Every
// process records to one history file. The history must be linearizable,
// hold refused operations (the late commits), and agree with the ledger:
// the orders' Paid add up to the accepted commits, and the tickets taken
// to those that held the inventory.
func TestHistory_Workload(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	store := ledger.New(rdb, "")
	require.NoError(t, store.AddTicketType(ctx, ledger.TicketType{ID: workType, Name: "Gold", Capacity: workStock, Price: 100, Currency: "EUR"}))
	for i := range workOrders {
		o := &ledger.Order{ID: fmt.Sprintf("o-%d", i), Items: []ledger.Item{{TicketType: workType, Quantity: 1}}, State: ledger.StateReserved}
		require.NoError(t, store.Commit(ctx, nil, ledger.Change{Order: o}))
	}
	run := 4 * time.Second
	if testing.Short() {
		run = 2 * time.Second
	}
	path := filepath.Join(t.TempDir(), "history.jsonl")

	const children = 2
	cmds := make([]*exec.Cmd, children)
	outputs := make([]*strings.Builder, children)
	for i := range cmds {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$") //nolint:gosec // the test binary itself, re-run as a child
		cmd.Env = append(os.Environ(), workloadChildEnv+"="+srv.Addr(), workFileEnv+"="+path, workRunEnv+"="+run.String())
		outputs[i] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outputs[i], outputs[i]
		require.NoError(t, cmd.Start())
		cmds[i] = cmd
	}
	rec, err := history.Create(path)
	require.NoError(t, err)
	stats, err := workload(ctx, rdb, rec, run)
	require.NoError(t, err)
	require.NoError(t, rec.Close())
	for i, cmd := range cmds {
		require.NoError(t, cmd.Wait(), "child %d:\n%s", i, outputs[i])
		t.Logf("child %d: %s", i, strings.TrimSpace(outputs[i].String()))
	}
	t.Logf("this process: %s", stats)

	records, err := history.ReadFiles(path)
	require.NoError(t, err)
	res, err := history.Check(records)
	require.NoError(t, err)
	t.Log(res)
	require.True(t, res.OK(), res.String())
	totals := res.Totals()
	require.Positive(t, totals.Refused, "no late commit was refused: the stalls proved nothing")

	// The history agrees with the ledger: every accepted commit added one.
	commits := map[string]int64{} // accepted commits per resource
	for _, r := range records {
		if r.Kind == history.KindCommit && r.Outcome == ledger.OutcomeAccepted {
			commits[r.Resource]++
		}
	}
	var paid, accepted int64
	for i := range workOrders {
		o, err := store.Order(ctx, fmt.Sprintf("o-%d", i))
		require.NoError(t, err)
		paid += o.Paid
		accepted += commits[lock.Key("order", o.ID).String()]
	}
	require.Positive(t, accepted)
	require.Equal(t, accepted, paid, "orders' Paid against accepted commits")
	_, avail, err := store.TicketType(ctx, workType)
	require.NoError(t, err)
	require.Equal(t, commits[lock.Key("ticket_type", workType, "inventory").String()], workStock-avail, "tickets taken against accepted inventory commits")
}

// workStats counts what one process's workers did.
type workStats struct {
	rounds, stalls, staleReads, staleCommits atomic.Int64
}

func (s *workStats) String() string {
	return fmt.Sprintf("%d rounds, %d stalled, %d stale reads, %d stale commits",
		s.rounds.Load(), s.stalls.Load(), s.staleReads.Load(), s.staleCommits.Load())
}

// workload runs the workers of one process against rdb for run, recording
// to h.
func workload(ctx context.Context, rdb redis.UniversalClient, h ledger.History, run time.Duration) (*workStats, error) {
	locker, err := lock.New(rdb, lock.Config{TTL: workTTL, Wait: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	defer locker.Close()
	store := ledger.New(rdb, "").WithHistory(h)
	stats := &workStats{}
	end := time.Now().Add(run)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) {
				if err := round(ctx, locker, store, stats); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return stats, <-errs // nil when closed empty
}

// round is one worker's read-modify-write under its locks.
func round(ctx context.Context, locker *lock.Locker, store *ledger.Store, stats *workStats) error {
	stats.rounds.Add(1)
	id := fmt.Sprintf("o-%d", rand.N(workOrders))      //nolint:gosec // G404: a workload needs no unpredictability
	withStock, stall := rand.N(2) == 0, rand.N(8) == 0 //nolint:gosec // G404: as above
	orderKey, stockKey := lock.Key("order", id), lock.Key("ticket_type", workType, "inventory")
	keys := []lock.Resource{orderKey}
	if withStock {
		keys = append(keys, stockKey)
	}
	lease, err := locker.Acquire(ctx, keys...)
	if errors.Is(err, lock.ErrNotAcquired) {
		return nil // busy past the wait: the next round
	}
	if err != nil {
		return err
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }() // ErrNotHeld after a stall, by design
	fences := make([]ledger.Fence, len(keys))
	for i, k := range keys {
		fences[i] = ledger.Fence{Resource: k.String(), Token: lease.Fence(k)}
	}
	o, err := store.Order(ctx, id, fences[0])
	ch := ledger.Change{Order: o}
	if err == nil && withStock {
		var avail int64
		_, avail, err = store.TicketType(ctx, workType, fences[1])
		ch.Available = map[string]int64{workType: avail - 1}
	}
	if errors.Is(err, ledger.ErrStaleFence) {
		stats.staleReads.Add(1)
		return nil
	}
	if err != nil {
		return err
	}
	o.Paid++
	if stall {
		stats.stalls.Add(1)
		time.Sleep(workStall) // the fault itself: a holder that pauses past its TTL
	}
	err = store.Commit(ctx, fences, ch)
	if errors.Is(err, ledger.ErrStaleFence) {
		stats.staleCommits.Add(1)
		return nil
	}
	return err
}

// workloadChild is one of TestHistory_Workload's other processes.
func workloadChild(addr string) int {
	run, err := time.ParseDuration(os.Getenv(workRunEnv))
	if err != nil {
		fmt.Println("bad run:", err)
		return 2
	}
	rec, err := history.Create(os.Getenv(workFileEnv))
	if err != nil {
		fmt.Println(err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	stats, err := workload(context.Background(), rdb, rec, run)
	if err := errors.Join(err, rec.Close()); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(stats)
	return 0
}
