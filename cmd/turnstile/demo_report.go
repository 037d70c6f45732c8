package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

// demoStats counts each job's runs by outcome and times them.
type demoStats struct {
	mu    sync.Mutex
	kinds map[string]*kindStats
	// The longest time the run went without finishing a checkout or a
	// task, and when it began: what a failover costs the shop.
	start, last, pauseFrom time.Time
	pause                  time.Duration
}

type kindStats struct {
	ok, archived, failed int
	took                 []time.Duration
}

func newDemoStats() *demoStats {
	now := time.Now()
	return &demoStats{kinds: map[string]*kindStats{}, start: now, last: now}
}

// progressed notes that a checkout or a task has finished.
func (s *demoStats) progressed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progressedLocked()
}

func (s *demoStats) progressedLocked() {
	now := time.Now()
	if gap := now.Sub(s.last); gap > s.pause {
		s.pause, s.pauseFrom = gap, s.last
	}
	s.last = now
}

// wrap counts and times every run of types' handlers.
func (s *demoStats) wrap(types []worker.TaskType) []worker.TaskType {
	for i := range types {
		next, kind := types[i].Handler, types[i].Type
		s.kinds[kind] = &kindStats{}
		types[i].Handler = asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			start := time.Now()
			err := next.ProcessTask(ctx, t)
			took := time.Since(start)
			s.mu.Lock()
			defer s.mu.Unlock()
			k := s.kinds[kind]
			switch {
			case err == nil:
				k.ok++
				s.progressedLocked()
			case errors.Is(err, asynq.SkipRetry):
				k.archived++
				s.progressedLocked()
			default:
				k.failed++
			}
			k.took = append(k.took, took)
			return err
		})
	}
	return types
}

func (s *demoStats) runs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, k := range s.kinds {
		n += k.ok + k.archived + k.failed
	}
	return n
}

// lockStats are read from the lock metrics.
type lockStats struct {
	Acquisitions int64 `json:"acquisitions"`
	Busy         int64 `json:"busy"`
	Contended    int64 `json:"contended"`
	BusyRetries  int64 `json:"busy_retries"`
	LostLeases   int64 `json:"lost_leases"`
	NotHeld      int64 `json:"released_after_expiry"`
}

func readLockStats(ctx context.Context, reader *sdkmetric.ManualReader) lockStats {
	var rm metricdata.ResourceMetrics
	var s lockStats
	if err := reader.Collect(ctx, &rm); err != nil {
		return s
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range d.DataPoints {
					outcome, _ := dp.Attributes.Value(telemetry.AttrOutcome)
					switch {
					case m.Name == telemetry.MetricLockAcquisitions && outcome.AsString() == telemetry.OutcomeAcquired:
						s.Acquisitions += dp.Value
					case m.Name == telemetry.MetricLockContended:
						s.Contended += dp.Value
					case m.Name == telemetry.MetricTaskBusyRetries:
						s.BusyRetries += dp.Value
					case m.Name == telemetry.MetricLockLosses:
						s.LostLeases += dp.Value
					case m.Name == telemetry.MetricLockReleases && outcome.AsString() == telemetry.OutcomeNotHeld:
						s.NotHeld += dp.Value
					}
				}
			}
		}
	}
	return s
}

// progress shows jobs done on a terminal as a bar redrawn in place, and
// elsewhere as a plain line a second.
type progress struct {
	w      io.Writer
	tty    bool
	stats  *demoStats
	reader *sdkmetric.ManualReader
	name   string
	last   time.Time
	drawn  bool
}

func newProgress(w io.Writer, stats *demoStats, reader *sdkmetric.ManualReader) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	return &progress{w: w, tty: tty, stats: stats, reader: reader}
}

func (p *progress) phase(name string) {
	p.name = name
	if !p.tty {
		fmt.Fprintf(p.w, "demo: %s\n", name)
	}
}

func (p *progress) update(ctx context.Context, enqueued int) {
	every := time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if time.Since(p.last) < every {
		return
	}
	p.last = time.Now()
	runs := p.stats.runs()
	ls := readLockStats(ctx, p.reader)
	line := fmt.Sprintf("%d runs for %d jobs · %d contended locks · %d busy retries", runs, enqueued, ls.Contended, ls.BusyRetries)
	if !p.tty {
		fmt.Fprintf(p.w, "demo: %s: %s\n", p.name, line)
		return
	}
	const width = 30
	filled := 0
	if enqueued > 0 {
		filled = min(width, width*runs/max(enqueued, 1))
	}
	fmt.Fprintf(p.w, "\r\033[K%-26s [%s%s] %s", p.name, strings.Repeat("#", filled), strings.Repeat(".", width-filled), line)
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// demoSummary is what the demo prints, and with -json its JSON.
type demoSummary struct {
	OK         bool             `json:"invariants_ok"`
	Violations []jobs.Violation `json:"violations"`
	// Unreconciled are orders whose money the gateway moved and the
	// ledger lost track of (jobs.Report.Unreconciled).
	Unreconciled []jobs.Violation      `json:"unreconciled"`
	Jobs         map[string]jobSummary `json:"jobs"`
	Locks        lockStats             `json:"locks"`
	Orders       orderSummary          `json:"orders"`
	Pause        pauseSummary          `json:"longest_pause"`
	// Archived says why the run's archived tasks were archived, by
	// reason, most frequent first: mostly the shop's rules at work.
	Archived []archivedReason `json:"archived_reasons"`
	Seed     uint64           `json:"seed"`
	NoLock   bool             `json:"no_lock"`
	Seconds  float64          `json:"seconds"`
	// Cleanup says whether the run's keys and tasks were removed.
	Cleanup cleanupSummary `json:"cleanup"`
	Report  jobs.Report    `json:"-"`
}

type jobSummary struct {
	OK       int     `json:"ok"`
	Archived int     `json:"archived"`
	Failed   int     `json:"failed_then_retried"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

type orderSummary struct {
	Generated int `json:"generated"`
	Reserved  int `json:"reserved"`
	SoldOut   int `json:"sold_out"`
	Tasks     int `json:"tasks_enqueued"`
	// Retried counts the load's steps (checkouts, reads, enqueues) tried
	// again after a Redis error.
	Retried int `json:"retried_after_redis_errors"`
	// Lost counts reserved orders the ledger no longer has: a Redis crash
	// lost the writes it had acknowledged last.
	Lost int `json:"lost_to_a_redis_crash"`
}

// pauseSummary is the longest time the run finished no checkout and no
// task, and when it began: counted from the start of the run, and as a
// time to line up with other logs (a failover's).
type pauseSummary struct {
	Ms   float64   `json:"ms"`
	AtMs float64   `json:"at_ms"`
	From time.Time `json:"from"`
}

func newSummary(f demoFlags, load *demoLoad, stats *demoStats, reader *sdkmetric.ManualReader, r jobs.Report, took time.Duration) *demoSummary {
	s := &demoSummary{
		OK: r.OK, Violations: r.Violations, Jobs: map[string]jobSummary{}, Locks: readLockStats(context.Background(), reader),
		Seed: f.seed, NoLock: f.noLock, Seconds: took.Seconds(), Report: r,
		Orders: orderSummary{Generated: f.orders, Reserved: load.reserved, SoldOut: load.soldOut, Tasks: load.enqueued, Retried: load.retried, Lost: len(load.lost)},
	}
	s.Unreconciled = r.Unreconciled
	s.Archived = load.archivedReasons(context.Background())
	if s.Violations == nil {
		s.Violations = []jobs.Violation{}
	}
	if s.Unreconciled == nil {
		s.Unreconciled = []jobs.Violation{}
	}
	stats.mu.Lock()
	defer stats.mu.Unlock()
	s.Pause = pauseSummary{Ms: ms(stats.pause), AtMs: ms(stats.pauseFrom.Sub(stats.start)), From: stats.pauseFrom}
	for kind, k := range stats.kinds {
		s.Jobs[kind] = jobSummary{OK: k.ok, Archived: k.archived, Failed: k.failed, P50ms: quantile(k.took, 0.50), P99ms: quantile(k.took, 0.99)}
	}
	return s
}

func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[int(q*float64(len(s)-1))])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (s *demoSummary) print(w io.Writer) {
	locks := "locks on"
	if s.NoLock {
		locks = "LOCKS OFF"
	}
	fmt.Fprintf(w, "turnstile demo, %s, seed %d, %.1fs: %d orders generated, %d reserved, %d sold out; %d tasks enqueued\n\n",
		locks, s.Seed, s.Seconds, s.Orders.Generated, s.Orders.Reserved, s.Orders.SoldOut, s.Orders.Tasks)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "job\tok\tarchived\tfailed, retried\tp50\tp99\t")
	for _, kind := range slices.Sorted(mapKeys(s.Jobs)) {
		j := s.Jobs[kind]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1fms\t%.1fms\t\n", kind, j.OK, j.Archived, j.Failed, j.P50ms, j.P99ms)
	}
	_ = tw.Flush()
	printArchived(w, s.Archived)
	fmt.Fprintf(w, "\nlongest pause: %.0fms from %.1fs into the run; %d steps retried after a Redis error\n", s.Pause.Ms, s.Pause.AtMs/1000, s.Orders.Retried)
	if s.Orders.Lost > 0 {
		fmt.Fprintf(w, "%d reserved orders lost: Redis came back without its last acknowledged writes\n", s.Orders.Lost)
	}
	fmt.Fprintf(w, "locks: %d acquired, %d acquire calls found a lock held (a task that then waits for it makes two), %d busy retries (parked), %d lost leases, %d released after expiry\n",
		s.Locks.Acquisitions, s.Locks.Contended, s.Locks.BusyRetries, s.Locks.LostLeases, s.Locks.NotHeld)
	s.Cleanup.print(w)
	if s.OK {
		fmt.Fprintf(w, "invariants: OK (%d orders, %d ticket types)\n", s.Report.Orders, s.Report.TicketTypes)
		return
	}
	if len(s.Violations) > 0 {
		fmt.Fprintf(w, "invariants: %d VIOLATED\n", len(s.Violations))
		listViolations(w, s.Violations)
	}
	if len(s.Unreconciled) > 0 {
		fmt.Fprintf(w, "gateway: %d orders to reconcile: it moved money the ledger lost track of (Redis lost writes it had acknowledged?)\n", len(s.Unreconciled))
		listViolations(w, s.Unreconciled)
	}
}

// listViolations prints the first 20 of vs.
func listViolations(w io.Writer, vs []jobs.Violation) {
	for i, v := range vs {
		if i == 20 {
			fmt.Fprintf(w, "  ... and %d more\n", len(vs)-i)
			return
		}
		fmt.Fprintf(w, "  %s: %s: %s\n", v.Subject, v.Rule, v.Detail)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
