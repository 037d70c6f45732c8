package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
)

const (
	// soakDefault is make soak's length when SOAK_DURATION is unset.
	soakDefault = 10 * time.Minute
	// soakInterval is the time between samples: 96 of them after the
	// warm-up of a 10-minute run, 19 of a 2-minute one.
	soakInterval = 5 * time.Second
	// soakWarmup is the share of the run left out of the fits: pools,
	// caches and asynq's own state fill during it.
	soakWarmup = 0.2
	// soakRate is checkouts started per second, TestChaos's rate.
	soakRate = 20.0
)

// Keys by what they are for. The first group must stay flat: each lives
// only while a lock is held, waited for, or a task is parked on it. The
// second grows with the orders by design (orders, their tasks and their
// resources' fence counters are kept), so it is reported per order.
const (
	classLocks         = "lock keys"
	classQueues        = "waiter queues"
	classWanted        = "wanted marks"
	classParked        = "parked lists"
	classParkedIndexes = "parked indexes"

	classFences  = "fence counters"
	classLedger  = "ledger"
	classGateway = "gateway"
	classAsynq   = "asynq"
	classOther   = "other"
)

var (
	flatClasses    = []string{classLocks, classQueues, classWanted, classParked, classParkedIndexes}
	growingClasses = []string{classFences, classLedger, classGateway, classAsynq, classOther}
)

// keyClass sorts a key by its name, as lock.Resource, middleware's parking
// and the stores build them.
func keyClass(k string) string {
	switch {
	case strings.HasPrefix(k, lock.DefaultPrefix):
		switch {
		case strings.HasSuffix(k, ":fence"):
			return classFences
		case strings.HasSuffix(k, ":queue"):
			return classQueues
		case strings.HasSuffix(k, ":wanted"):
			return classWanted
		}
		return classLocks
	case strings.HasPrefix(k, "asynq:turnstile:parked:{") && strings.HasSuffix(k, "}:queues"):
		return classParkedIndexes
	case strings.HasPrefix(k, "asynq:") && strings.Contains(k, ":turnstile:parked:"):
		return classParked
	case strings.HasPrefix(k, ledger.DefaultPrefix):
		return classLedger
	case strings.HasPrefix(k, gateway.DefaultPrefix):
		return classGateway
	case strings.HasPrefix(k, "asynq:"):
		return classAsynq
	}
	return classOther
}

// workerSample is one worker's figures at one time, from its /metrics
// (the Go and process collectors telemetry.Setup registers) and /proc.
type workerSample struct {
	goroutines float64 // go_goroutines
	heapAlloc  float64 // go_memstats_heap_alloc_bytes: a sawtooth between GCs
	// heapLive is go_memstats_next_gc_bytes/2: the GC sets its goal to
	// twice the heap live after the last cycle (GOGC=100), so this steps
	// with what survives a GC instead of swinging with what waits for it.
	heapLive float64
	fds      float64 // process_open_fds
	// gomaxprocs is go_sched_gomaxprocs_threads, which sizes its pool.
	gomaxprocs float64
	conns      float64 // established TCP connections to the redis-server
}

// soakSample is everything sampled at one time.
type soakSample struct {
	at      time.Duration // since the load started
	orders  int           // checkouts reserved by then
	soldOut int           // checkouts sold out by then
	workers []workerSample
	keys    map[string]int // by keyClass
	dbsize  int
	clients int // INFO clients: connected_clients
	own     int // the test process's own connections to Redis
}

// soakDuration is SOAK_DURATION, or soakDefault.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("SOAK_DURATION")
	if s == "" {
		return soakDefault
	}
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "SOAK_DURATION")
	require.GreaterOrEqual(t, d, 2*time.Minute, "SOAK_DURATION: shorter runs end while the connection pools still fill")
	return d
}

// TestSoak drives the shop's steady load at a fleet of workers for
// SOAK_DURATION and asserts that, after a warm-up, nothing that should be
// flat grows: each worker's goroutines, live heap and Redis connections,
// the Redis clients, and the keys that live only while a lock is held or
// waited for. Keys that grow with orders by design are reported per order.
//
// It runs only with SOAK=true (make soak), not in CI: in the first two
// minutes the connection pools and the workers' caches still fill (a
// 1-minute run failed on its connections' slope, 7/min for a bound of
// 4), so a CI-sized run of 45 s would assert little but noise, and the
// fault suite already takes CI's budget.
func TestSoak(t *testing.T) {
	if !envBool("SOAK") {
		t.Skip("soak: minutes long; run with make soak, or SOAK=true [SOAK_DURATION=2m]")
	}
	d, seed := soakDuration(t), envSeed(t)
	t.Logf("soak: %s at %.0f checkouts/s, seed %d, a sample every %s, the first %.0f%% left out of the fits",
		d, soakRate, seed, soakInterval, 100*soakWarmup)

	ctx := t.Context()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	fl := startFleet(t, srv.Addr(), workers)
	ld, store, gw := soakLoad(t, rdb, fl, seed, d)

	var (
		samples   []soakSample
		sampleErr error
		stopLoad  = make(chan struct{})
		sampled   = make(chan struct{})
	)
	loadStart := time.Now()
	go func() {
		defer close(sampled)
		defer close(stopLoad)
		tick := time.NewTicker(soakInterval)
		defer tick.Stop()
		for {
			s, err := takeSample(ctx, rdb, fl, ld, srv.Addr())
			if err != nil {
				sampleErr = err
				return
			}
			s.at = time.Since(loadStart)
			samples = append(samples, s)
			if time.Since(loadStart)+soakInterval/2 >= d {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	started := ld.run(ctx, soakRate, stopLoad)
	<-sampled
	require.NoError(t, sampleErr)

	// The books and the tasks, as after a chaos run: a slow leak that
	// breaks them is as much a soak's finding as one that grows.
	idle, err := waitIdle(ctx, ld.inspect, idleBound)
	require.NoError(t, err)
	require.NoError(t, fl.stopAll())
	report, err := jobs.Check(ctx, store, gw)
	require.NoError(t, err)
	tasks := checkTasks(ld.inspect, ld.tasks)
	left, indexes, err := leftovers(ctx, rdb)
	require.NoError(t, err)
	t.Logf("soak: %d checkouts (%d reserved, %d sold out), %d tasks: %d completed, %d archived, %d lost; %d violations; %d leftover keys (%d parked indexes within their TTL); idle %s after the load",
		started, ld.reserved, ld.soldOut, len(ld.tasks), tasks.completed, tasks.archived, len(tasks.lost),
		len(report.Violations), len(left), indexes, idle.Round(time.Millisecond))

	var stock []string
	for _, tt := range ld.types {
		_, available, err := store.TicketType(ctx, tt.ID)
		require.NoError(t, err)
		stock = append(stock, fmt.Sprintf("%s %d of %d", tt.ID, available, tt.Capacity))
	}
	t.Logf("soak: stock left: %s", strings.Join(stock, ", "))
	writeSamples(t, samples)
	rows := soakRows(samples, d)
	require.NotEmpty(t, rows, "too few samples after the warm-up")
	t.Log("\n" + soakTable(rows, samples, d))
	for _, r := range rows {
		// Each row on its own, so one run shows every series that grows.
		if why := r.failure(); why != "" {
			t.Errorf("%s: %s after the warm-up (see the bounds in soak_test.go)", r.name, why)
		}
	}
	require.Empty(t, ld.errs, "the load failed")
	require.Empty(t, report.Violations, "invariants")
	require.Empty(t, tasks.lost, "tasks neither completed nor archived with a reason")
	require.Empty(t, left, "lock keys or parked lists outlived their TTLs")
}

// soakLoad prepares the shop as runScenario does, but with forty times
// the stock for the checkouts the run will start. With runScenario's three
// times, gold (n/30 seats, asked by 0.45 of the checkouts, 2 on average:
// load.items picks the arena for every checkout) sold out after about 270
// checkouts and 47% of a 2-minute soak's checkouts failed from then on:
// the load changed its mix early, which is no steady state to fit a
// slope to. At forty times, gold has 1.3 seats per checkout for 0.9 asked.
func soakLoad(t *testing.T, rdb *redis.Client, fl *fleet, seed uint64, d time.Duration) (*load, *ledger.Store, *gateway.Simulator) {
	t.Helper()
	ctx := t.Context()
	locker, err := lock.New(rdb, lock.Config{TTL: shopLockTTL, Wait: shopLockTTL})
	require.NoError(t, err)
	t.Cleanup(func() { _ = locker.Close() })               // closing a test's client; nothing to report
	gw, err := gateway.NewSimulator(rdb, gateway.Config{}) // the workers' prefix: Check reads their captures
	require.NoError(t, err)
	rec, err := history.Create(filepath.Join(t.TempDir(), "history-producer.jsonl"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rec.Close() }) // the soak does not check histories; TestChaos does
	store := ledger.New(rdb, "").WithHistory(rec)
	types := shopTicketTypes(40 * int(soakRate*d.Seconds()))
	for _, tt := range types {
		require.NoError(t, store.AddTicketType(ctx, tt))
	}
	ld := &load{
		seed: seed, inspect: asynq.NewInspectorFromRedisClient(rdb), http: &http.Client{}, types: types,
		svc: &jobs.Service{
			Store: store, Gateway: gw, Locker: locker, Client: asynq.NewClientFromRedisClient(rdb),
			PaymentWindow: time.Hour, // a revoke runs when the load makes it due
		},
	}
	for _, p := range fl.procs {
		ld.admins = append(ld.admins, p.admin)
	}
	return ld, store, gw
}

// takeSample reads every worker's /metrics and connections, and Redis's
// keys and clients.
func takeSample(ctx context.Context, rdb *redis.Client, fl *fleet, ld *load, redisAddr string) (soakSample, error) {
	s := soakSample{keys: map[string]int{}}
	ld.mu.Lock()
	s.orders, s.soldOut = ld.reserved, ld.soldOut
	ld.mu.Unlock()
	_, redisPort, _ := strings.Cut(redisAddr, ":")
	for _, p := range fl.procs {
		w, err := workerMetrics(ctx, p.admin)
		if err != nil {
			return s, fmt.Errorf("worker %d: %w", p.slot, err)
		}
		p.mu.Lock()
		pid := p.cmd.Process.Pid
		p.mu.Unlock()
		n, err := redisConns(pid, redisPort)
		if err != nil {
			return s, fmt.Errorf("worker %d: %w", p.slot, err)
		}
		w.conns = float64(n)
		s.workers = append(s.workers, w)
	}
	own, err := redisConns(os.Getpid(), redisPort)
	if err != nil {
		return s, fmt.Errorf("the test's own connections: %w", err)
	}
	s.own = own
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		s.keys[keyClass(iter.Val())]++
		s.dbsize++
	}
	if err := iter.Err(); err != nil {
		return s, err
	}
	info, err := rdb.Info(ctx, "clients").Result()
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_clients:"); ok {
			s.clients, err = strconv.Atoi(v)
			if err != nil {
				return s, fmt.Errorf("INFO clients: %w", err)
			}
		}
	}
	return s, nil
}

// workerMetrics reads the few series it needs from a worker's /metrics,
// in the Prometheus text format (name, optional labels, value).
func workerMetrics(ctx context.Context, addr string) (workerSample, error) {
	var w workerSample
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return w, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return w, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return w, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	want := map[string]*float64{
		"go_goroutines":                &w.goroutines,
		"go_memstats_heap_alloc_bytes": &w.heapAlloc,
		"go_memstats_next_gc_bytes":    &w.heapLive,
		"process_open_fds":             &w.fds,
		"go_sched_gomaxprocs_threads":  &w.gomaxprocs,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(value, 64); err != nil {
				return w, fmt.Errorf("/metrics: %s: %w", name, err)
			}
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return w, err
	}
	if found != len(want) {
		return w, fmt.Errorf("/metrics: %d of the %d series wanted", found, len(want))
	}
	w.heapLive /= 2
	return w, nil
}

// redisConns counts pid's established TCP connections to redisPort: the
// sockets among its file descriptors that /proc/<pid>/net/tcp lists with
// that remote port. Redis's CLIENT LIST does not say which process a
// client is, and the workers set no client name.
func redisConns(pid int, redisPort string) (int, error) {
	port, err := strconv.ParseUint(redisPort, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("redis port %q: %w", redisPort, err)
	}
	proc := "/proc/" + strconv.Itoa(pid)
	f, err := os.Open(proc + "/net/tcp") //nolint:gosec // G304: /proc of a worker this test started
	if err != nil {
		return 0, err
	}
	toRedis := map[string]bool{} // socket inodes
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "01" { // 01: ESTABLISHED
			continue
		}
		_, rem, _ := strings.Cut(fields[2], ":")
		if p, err := strconv.ParseUint(rem, 16, 16); err == nil && p == port {
			toRedis[fields[9]] = true
		}
	}
	if err := errors.Join(sc.Err(), f.Close()); err != nil {
		return 0, err
	}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(proc + "/fd/" + fd.Name())
		if err != nil {
			continue // closed since ReadDir
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok && toRedis[strings.TrimSuffix(inode, "]")] {
			n++
		}
	}
	return n, nil
}

// soakRow is one series' summary over the samples after the warm-up.
type soakRow struct {
	name             string
	bytes            bool    // print as KB
	start, end, max  float64 // first and last sample after the warm-up, largest
	slope, stderr    float64 // per minute, least squares, and its standard error
	bound            float64 // on slope, per minute; 0: reported only
	ceiling          float64 // on max; 0: none
	perOrder         float64 // growth per order reserved after the warm-up
	reportedPerOrder bool
}

// failure says how the row breaks its bounds, or "" if it does not. The
// slope may exceed its bound by three standard errors of the fit: a short
// or noisy run widens its own tolerance instead of failing by chance,
// while over a 10-minute run the error is a small part of the bound.
func (r soakRow) failure() string {
	var why []string
	if r.bound > 0 && r.slope-3*r.stderr > r.bound {
		why = append(why, fmt.Sprintf("grows %s/min (±%s), bound %s/min", r.unit(r.slope), r.unit(r.stderr), r.unit(r.bound)))
	}
	if r.ceiling > 0 && r.max > r.ceiling {
		why = append(why, fmt.Sprintf("reached %s, ceiling %s", r.unit(r.max), r.unit(r.ceiling)))
	}
	return strings.Join(why, "; ")
}

func (r soakRow) unit(v float64) string {
	if r.bytes {
		return fmt.Sprintf("%.0f KB", v/1024)
	}
	return fmt.Sprintf("%.1f", v)
}

// fit is the least-squares line through (xs, ys): its slope and the
// slope's standard error.
func fit(xs, ys []float64) (slope, stderr float64) {
	n := float64(len(xs))
	var sx, sy float64
	for i := range xs {
		sx, sy = sx+xs[i], sy+ys[i]
	}
	mx, my := sx/n, sy/n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 || n < 3 {
		return 0, 0
	}
	slope = sxy / sxx
	var rss float64
	for i := range xs {
		e := ys[i] - my - slope*(xs[i]-mx)
		rss += e * e
	}
	return slope, math.Sqrt(rss / (n - 2) / sxx)
}

// The bounds, per minute after the warm-up, at soakRate (about 1,200
// orders and 2,400 tasks a minute, 800 tasks per worker).
const (
	// goroutineBound: at rest a worker runs about 22 goroutines and up to
	// 40 in a burst; a 10-minute fit varies by ±0.2/min. Leaking one
	// goroutine in 400 tasks exceeds it.
	goroutineBound = 2.0
	// heapPerOrder bounds the live heap's growth per order reserved, per
	// worker. Heap profiles of a soak put the growth at about 100 B an
	// order, almost all of it two bounded structures filling: the
	// ledger's order-event cache (2 generations of 65,536 orders, full
	// after about 80 minutes at this rate) and the admin Tracker's
	// 10-minute window of contended resources. Keeping 300 B more per
	// order (a payload, a context, a span) exceeds it.
	heapPerOrder = 400
	// connBound: a worker's connections are its go-redis pool's high-water
	// mark (idle ones close only after 30 minutes) plus its pub/sub
	// connections, so they rise in ever rarer steps, 0.2-0.5/min over a
	// 10-minute run. One leaked connection a minute exceeds it.
	connBound = 1.0
	// lockKeyBound: lock keys, waiter queues, wanted marks and parked lists
	// live while a lock is held or waited for (0-30 at a time, each under
	// a 5 s TTL); leaking one in 1,000 tasks exceeds it.
	lockKeyBound = 2.0
)

// pubSubConns are a worker's connections outside its pool: asynq's
// cancellation channel and the lock hubs of its two Lockers, plus one to
// spare.
const pubSubConns = 4

// poolSize is the go-redis pool a worker of concurrency 8 (startFleet's
// TURNSTILE_CONCURRENCY) opens, as worker/redis.go's poolSize sizes it.
func poolSize(gomaxprocs float64) float64 { return max(10*gomaxprocs, 8+16) }

// soakRows fits each series after the warm-up and sets its bounds.
func soakRows(samples []soakSample, d time.Duration) []soakRow {
	var after []soakSample
	for _, s := range samples {
		if s.at >= time.Duration(soakWarmup*float64(d)) {
			after = append(after, s)
		}
	}
	if len(after) < 3 {
		return nil
	}
	xs := make([]float64, len(after))
	for i, s := range after {
		xs[i] = s.at.Minutes()
	}
	orders := float64(after[len(after)-1].orders - after[0].orders)
	row := func(name string, get func(soakSample) float64) soakRow {
		r := soakRow{name: name, max: math.Inf(-1)}
		ys := make([]float64, len(after))
		for i, s := range after {
			ys[i] = get(s)
			r.max = max(r.max, ys[i])
		}
		r.start, r.end = ys[0], ys[len(ys)-1]
		r.slope, r.stderr = fit(xs, ys)
		if orders > 0 {
			r.perOrder = (r.end - r.start) / orders
		}
		return r
	}
	ordersRow := row("orders reserved", func(s soakSample) float64 { return float64(s.orders) })
	var rows []soakRow
	for i := range after[0].workers {
		w := func(get func(workerSample) float64) func(soakSample) float64 {
			return func(s soakSample) float64 { return get(s.workers[i]) }
		}
		r := row(fmt.Sprintf("worker %d goroutines", i), w(func(w workerSample) float64 { return w.goroutines }))
		r.bound = goroutineBound
		rows = append(rows, r)
		r = row(fmt.Sprintf("worker %d heap live", i), w(func(w workerSample) float64 { return w.heapLive }))
		r.bytes, r.bound, r.reportedPerOrder = true, heapPerOrder*ordersRow.slope, true
		rows = append(rows, r)
		r = row(fmt.Sprintf("worker %d heap alloc", i), w(func(w workerSample) float64 { return w.heapAlloc }))
		r.bytes, r.reportedPerOrder = true, true
		rows = append(rows, r)
		r = row(fmt.Sprintf("worker %d redis conns", i), w(func(w workerSample) float64 { return w.conns }))
		r.bound, r.ceiling = connBound, poolSize(after[0].workers[i].gomaxprocs)+pubSubConns
		rows = append(rows, r)
		rows = append(rows, row(fmt.Sprintf("worker %d open fds", i), w(func(w workerSample) float64 { return w.fds })))
	}
	// Redis's clients are the workers', the test's own (its pool, which
	// also fills, and its Locker's hub), and any other: a connection
	// Redis keeps after its client closed or lost it. Those must stay
	// flat; the total is reported.
	rows = append(rows, row("redis clients", func(s soakSample) float64 { return float64(s.clients) }),
		row("- the test's own", func(s soakSample) float64 { return float64(s.own) }))
	r := row("- unaccounted for", func(s soakSample) float64 {
		n := s.clients - s.own
		for _, w := range s.workers {
			n -= int(w.conns)
		}
		return float64(n)
	})
	r.bound = connBound
	rows = append(rows, r)
	// Parked indexes are left out of the sum: each lives up to 6 minutes
	// after its last parked task by design, so they rise for the first
	// 6 minutes; leftovers checks their TTLs after the run.
	r = row("lock-related keys", func(s soakSample) float64 {
		n := 0
		for _, c := range flatClasses {
			if c != classParkedIndexes {
				n += s.keys[c]
			}
		}
		return float64(n)
	})
	r.bound = lockKeyBound
	rows = append(rows, r)
	for _, c := range flatClasses {
		rows = append(rows, row("- "+c, func(s soakSample) float64 { return float64(s.keys[c]) }))
	}
	for _, c := range growingClasses {
		r := row(c, func(s soakSample) float64 { return float64(s.keys[c]) })
		r.reportedPerOrder = true
		rows = append(rows, r)
	}
	r = row("dbsize", func(s soakSample) float64 { return float64(s.dbsize) })
	r.reportedPerOrder = true
	return append(rows, r, ordersRow,
		row("checkouts sold out", func(s soakSample) float64 { return float64(s.soldOut) }))
}

// soakTable prints the rows.
func soakTable(rows []soakRow, samples []soakSample, d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d samples over %s; start, end, max and the least-squares slope are over those after %s\n",
		len(samples), d, time.Duration(soakWarmup*float64(d)))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "series\tstart\tend\tmax\tslope/min\t±\tbound/min\tceiling\tper order\t\t")
	for _, r := range rows {
		bound, ceiling, per, verdict := "-", "-", "-", ""
		if r.bound > 0 {
			bound = r.unit(r.bound)
		}
		if r.ceiling > 0 {
			ceiling = r.unit(r.ceiling)
		}
		if r.reportedPerOrder {
			per = fmt.Sprintf("%.2f", r.perOrder)
			if r.bytes {
				per = fmt.Sprintf("%.0f B", r.perOrder)
			}
		}
		if r.bound > 0 || r.ceiling > 0 {
			verdict = "ok"
			if r.failure() != "" {
				verdict = "FAIL"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, r.unit(r.start), r.unit(r.end), r.unit(r.max),
			r.unit(r.slope), r.unit(r.stderr), bound, ceiling, per, verdict)
	}
	_ = tw.Flush() // into a strings.Builder, which does not fail
	return b.String()
}

// writeSamples writes every sample as CSV into the test's artifact
// directory (kept with go test -artifacts), for a closer look at a run.
func writeSamples(t *testing.T, samples []soakSample) {
	t.Helper()
	var b strings.Builder
	b.WriteString("seconds,orders,sold_out,clients,own_conns,dbsize")
	for _, c := range append(slices.Clone(flatClasses), growingClasses...) {
		b.WriteString("," + strings.ReplaceAll(c, " ", "_"))
	}
	for i := range workers {
		fmt.Fprintf(&b, ",w%[1]d_goroutines,w%[1]d_heap_live,w%[1]d_heap_alloc,w%[1]d_conns,w%[1]d_fds", i)
	}
	b.WriteString("\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.1f,%d,%d,%d,%d,%d", s.at.Seconds(), s.orders, s.soldOut, s.clients, s.own, s.dbsize)
		for _, c := range append(slices.Clone(flatClasses), growingClasses...) {
			fmt.Fprintf(&b, ",%d", s.keys[c])
		}
		for _, w := range s.workers {
			fmt.Fprintf(&b, ",%.0f,%.0f,%.0f,%.0f,%.0f", w.goroutines, w.heapLive, w.heapAlloc, w.conns, w.fds)
		}
		b.WriteString("\n")
	}
	path := filepath.Join(t.ArtifactDir(), "soak.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Errorf("write the samples: %v", err)
		return
	}
	t.Logf("soak: samples in %s", path)
}
