package chaos

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

// workers is how many worker processes each run starts.
const workers = 3

// scenario is one kind of run: which faults, how many, how much load.
type scenario struct {
	name   string
	kinds  []faultKind
	faults int
	// rate is checkouts started per second; each brings 1-4 tasks.
	rate float64
	// minLoad is the shortest load; it also runs 2 s past the last fault.
	minLoad time.Duration
}

// netKinds are the faults that act on a worker's proxy.
var netKinds = []faultKind{faultLatency, faultReset, faultBlackhole, faultSlowClose}

// scenarios are the CI set (long: false) or make chaos's (long: true):
// each fault kind alone, then all of them mixed. CI runs the network
// faults together as Net, and the restarts as Redis, one of each, since
// every scenario runs at once and two cores starve under more fleets. A new kind is a constant in
// faults_test.go, a case in strike, and a line here.
func scenarios(long bool) []scenario {
	n := func(short, long2 int) int {
		if long {
			return long2
		}
		return short
	}
	scs := []scenario{
		{name: "None", rate: 20, minLoad: time.Duration(n(8, 30)) * time.Second},
		{name: "Kill", kinds: []faultKind{faultKill}, faults: n(1, 3), rate: 20, minLoad: 8 * time.Second},
		{name: "Pause", kinds: []faultKind{faultPause}, faults: n(1, 2), rate: 20, minLoad: 8 * time.Second},
	}
	if long {
		scs = append(scs,
			scenario{name: "Latency", kinds: []faultKind{faultLatency}, faults: 3, rate: 20, minLoad: 8 * time.Second},
			scenario{name: "Reset", kinds: []faultKind{faultReset}, faults: 3, rate: 20, minLoad: 8 * time.Second},
			scenario{name: "Blackhole", kinds: []faultKind{faultBlackhole}, faults: 2, rate: 20, minLoad: 8 * time.Second},
			scenario{name: "SlowClose", kinds: []faultKind{faultSlowClose}, faults: 3, rate: 20, minLoad: 8 * time.Second},
		)
		scs = append(scs,
			scenario{name: "Crash", kinds: []faultKind{faultCrash}, faults: 2, rate: 20, minLoad: 8 * time.Second},
			scenario{name: "Wipe", kinds: []faultKind{faultWipe}, faults: 2, rate: 20, minLoad: 8 * time.Second},
		)
	} else {
		scs = append(scs,
			scenario{name: "Net", kinds: netKinds, faults: len(netKinds), rate: 20, minLoad: 8 * time.Second},
			scenario{name: "Redis", kinds: redisKinds, faults: len(redisKinds), rate: 20, minLoad: 8 * time.Second},
		)
	}
	// Short: three kinds the seed draws; long: every kind at least once.
	mixed := slices.Concat([]faultKind{faultKill, faultPause}, netKinds, redisKinds)
	return append(scs, scenario{name: "Mixed", kinds: mixed, faults: n(3, len(mixed)), rate: 20, minLoad: 8 * time.Second})
}

// restarts says whether sc restarts Redis.
func (sc scenario) restarts() bool {
	return slices.ContainsFunc(sc.kinds, func(k faultKind) bool { return slices.Contains(redisKinds, k) })
}

// longRunsAtOnce bounds the runs of make chaos under way at once: its
// eight scenarios at once, 24 workers on two cores, starved each other
// (a third of the throughput). CI's five all run at once.
const longRunsAtOnce = 4

// envSeed is CHAOS_SEED, or one from the clock: printed either way, so a
// failing run can be repeated with make chaos SEED=n.
func envSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "CHAOS_SEED")
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// envBool reads a true/false variable; unset or not a bool is false.
func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name)) // unset or not a bool: false
	return b
}

// TestChaos runs each scenario (CHAOS_LONG: three times, with seeds seed,
// seed+1, seed+2) against its own redis-server and worker fleet, each
// worker behind its own proxy, and logs the table. Every check that fails
// fails its run.
func TestChaos(t *testing.T) {
	seed, long := envSeed(t), envBool("CHAOS_LONG")
	t.Logf("chaos: seed %d (repeat with make chaos SEED=%d), long %v", seed, seed, long)
	results := runAll(t, scenarios(long), seed, long, fleetOptions{proxied: true}, true)
	t.Log("\n" + table(results))
}

// runAll runs scs as TestChaos does, one subtest per run, and returns
// their results. strict: a failed check fails its run's subtest; if not (a
// mutant's runs, which are meant to fail), failures are logged and kept in
// the results only.
func runAll(t *testing.T, scs []scenario, seed uint64, long bool, opts fleetOptions, strict bool) []result {
	t.Helper()
	if opts.bin == "" {
		turnstileBin(t) // once, before the runs race for it
	}
	runs, slots := 1, make(chan struct{}, len(scs))
	if long {
		runs, slots = 3, make(chan struct{}, longRunsAtOnce)
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	for _, sc := range scs {
		// t.Run from goroutines: the scenarios at once (up to the slots),
		// not GOMAXPROCS at a time as t.Parallel would, since they mostly
		// wait; a scenario's runs one after the other, to bound the
		// processes.
		wg.Go(func() {
			for i := range runs {
				runSeed := seed + uint64(i)
				slots <- struct{}{}
				// The slot is freed out here: -run may skip the function.
				t.Run(sc.name+"/"+strconv.FormatUint(runSeed, 10), func(t *testing.T) {
					r := result{scenario: sc.name, seed: runSeed}
					defer func() { // a failed run's figures go in the table too
						r.failed = r.failed || t.Failed()
						mu.Lock()
						results = append(results, r)
						mu.Unlock()
					}()
					run(t, sc, runSeed, &r, opts)
					r.checks = r.failures()
					for _, f := range r.checks {
						if strict {
							t.Errorf("seed %d: %s", runSeed, f)
						} else {
							t.Logf("seed %d: %s", runSeed, f)
						}
					}
					r.failed = len(r.checks) > 0
				})
				<-slots
			}
		})
	}
	wg.Wait()
	return results
}

// plannedLoad is how long the load of a run with steps lasts at most: the
// faults one after the other (a kill or a restart of Redis counted as
// 2-3 s, the others as long as they hold), then 2 s, and at least minLoad.
func plannedLoad(sc scenario, steps []step) time.Duration {
	d := 2 * time.Second
	for _, s := range steps {
		d += s.gap + midJobWait
		switch s.kind {
		case faultKill, faultWipe:
			d += 2 * time.Second
		case faultCrash: // the second it loses, and the restart
			d += 3 * time.Second
		default:
			d += s.hold
		}
	}
	return max(d, sc.minLoad)
}

// run is one run: start, load under faults, wait, collect what the checks
// need. It fills r as it goes, so that a failed run's figures can still be
// reported; r.failures() is the checks' verdict. It fails t only when the
// run cannot go on (setup, Redis, files), not when a check fails, so that
// a mutant's run can expect a check to fail.
func run(t *testing.T, sc scenario, seed uint64, r *result, opts fleetOptions) {
	t.Helper()
	ctx := t.Context()
	srv := redistest.Server(t)
	if sc.restarts() {
		// A crash cuts the append-only file back a second; no rewrite may
		// start a new file meanwhile.
		srv = redistest.ServerWith(t, "--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0")
	}
	rdb := srv.Client(t)
	// The gateway keeps its books apart, as a payment provider does: a
	// restart of the shop's Redis does not take back its captures.
	gwSrv := redistest.Server(t)
	opts.gatewayAddr = gwSrv.Addr()
	fl := startFleetWith(t, srv.Addr(), workers, opts)

	locker, err := lock.New(rdb, lock.Config{TTL: shopLockTTL, Wait: shopLockTTL})
	require.NoError(t, err)
	t.Cleanup(func() { _ = locker.Close() })                           // closing a test's client; nothing to report
	gw, err := gateway.NewSimulator(gwSrv.Client(t), gateway.Config{}) // the workers' prefix: Check reads their captures
	require.NoError(t, err)
	// The producer's checkouts take fences too: its history joins the
	// workers' for the check.
	producerHistory := filepath.Join(t.TempDir(), "history-producer.jsonl")
	rec, err := history.Create(producerHistory)
	require.NoError(t, err)
	store := ledger.New(rdb, "").WithHistory(rec) // the workers' prefix, as cmd/turnstile/tasks.go builds it
	client := asynq.NewClientFromRedisClient(rdb)
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	// Three times the demo's stock for as many checkouts as the run is
	// planned to start: here paid orders keep their tickets for the whole
	// run, and about a third still sell out.
	steps := plan(seed, sc.kinds, sc.faults)
	types := shopTicketTypes(3 * int(sc.rate*plannedLoad(sc, steps).Seconds()))
	for _, tt := range types {
		require.NoError(t, store.AddTicketType(ctx, tt))
	}
	ld := &load{
		seed: seed, inspect: inspect, http: &http.Client{}, types: types,
		// An hour's payment window: a revoke runs when the load makes it due.
		svc: &jobs.Service{Store: store, Gateway: gw, Locker: locker, Client: client, PaymentWindow: time.Hour},
	}
	for _, p := range fl.procs {
		ld.admins = append(ld.admins, p.admin)
	}

	tg := target{fleet: fl, locker: locker, rdb: rdb}
	if sc.restarts() {
		tg.restarter = &restarter{srv: srv, rdb: rdb, store: store, types: types}
	}
	t.Logf("seed %d: %d workers, %d faults planned", seed, workers, len(steps))
	stopLoad := make(chan struct{})
	var faults []fault
	var injectErr error
	loadStart := time.Now()
	go func() {
		defer close(stopLoad)
		faults, injectErr = inject(ctx, tg, steps)
		// The load goes on past the last fault, for its recovery.
		select {
		case <-ctx.Done():
		case <-time.After(max(time.Until(loadStart.Add(sc.minLoad)), 2*time.Second)):
		}
	}()
	started := ld.run(ctx, sc.rate, stopLoad)
	loadEnd := time.Now()
	require.NoError(t, injectErr, "seed %d", seed)
	for _, f := range faults {
		t.Logf("seed %d: %s", seed, f)
	}
	r.started, r.faults, r.loadErrs, r.vanished = started, faults, ld.errs, ld.vanished
	losses, restarts := tg.restarter.windows()
	r.restarts = restarts
	for _, w := range losses {
		t.Logf("seed %d: writes acknowledged from %s to %s may be lost", seed, w.from.Format(stamp), w.to.Format(stamp))
	}

	r.idle, r.idleErr = waitIdle(ctx, inspect, idleBound)
	if r.idleErr == nil {
		r.idleErr = waitDelivered(ctx, store)
	}
	if r.idleErr != nil {
		return // the books of a run still under way say nothing yet
	}
	require.NoError(t, fl.stopAll(), "seed %d", seed)

	r.report, err = jobs.Check(ctx, store, gw)
	require.NoError(t, err)
	r.violations = r.report.Violations
	r.tasks = checkTasks(inspect, ld.tasks, losses...)
	r.logs, err = countLogs(fl.logFiles())
	require.NoError(t, err)
	require.NoError(t, rec.Close())
	records, err := history.ReadFiles(append(fl.historyFiles(), producerHistory)...)
	require.NoError(t, err)
	r.history, err = history.Checker{Restarts: restarts}.Check(records)
	require.NoError(t, err)
	r.overlaps = overlaps(records, shopLockTTL, restarts)
	r.fencesBack = fencesGoBack(records, restarts)
	r.leftovers, r.parkedIndexes, err = leftovers(ctx, rdb)
	require.NoError(t, err)
	r.measure(loadStart, loadEnd)
	t.Logf("seed %d: %s", seed, r.summary(ld))
}
