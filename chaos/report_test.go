package chaos

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs"
)

// result is one run's figures.
type result struct {
	scenario   string
	failed     bool
	seed       uint64
	started    int // checkouts
	faults     []fault
	loadErrs   []error       // the producer's steps that failed
	idle       time.Duration // from the end of the load to idle queues
	idleErr    error         // the queues were not idle within idleBound
	report     jobs.Report
	violations []jobs.Violation
	tasks      taskOutcome
	logs       logCounts
	history    history.Result // the ledger's fenced operations, checked
	// overlaps are refused operations whose lock cannot have run out yet
	// (see overlaps): two holders at once.
	overlaps  []history.Record
	leftovers []string
	// restarts are the run's restarts of Redis; vanished counts the
	// load's steps that found what they needed gone with one (load.vanished).
	restarts []history.Restart
	vanished int
	// fencesBack are fences handed out again after a restart (fencesGoBack).
	fencesBack []string
	checks     []failure // the checks the run failed
	// parkedIndexes are parked-queues index sets still there, within
	// their TTL (see leftovers).
	parkedIndexes int

	// rateClean and rateFault are retained tasks completed per second
	// outside and inside fault windows during the load (NaN: no such time).
	rateClean, rateFault float64
	// recoveries are, per fault whose worker held order locks, the time
	// from the fault's end until each of those orders had a task
	// completed since the fault began (0: within the fault's last second).
	recoveries []time.Duration
	unmeasured int // faults with no retained task completing on a held order
}

// The checks a run must pass, as failures name them.
const (
	checkLoad         = "load"
	checkIdle         = "idle"
	checkInvariants   = "invariants"
	checkLinearizable = "linearizable"
	checkExclusive    = "exclusive"
	checkLost         = "lost"
	checkLeftovers    = "leftovers"
	checkFences       = "fences"
	checkReconciled   = "reconciled"
)

// failure is one check a run failed, and why.
type failure struct {
	check  string
	detail string
}

func (f failure) String() string { return f.check + ": " + f.detail }

// failures are the checks the run failed, none when it passed. A run whose
// queues never went idle was not checked further: that is its failure.
func (r *result) failures() []failure {
	var fs []failure
	if len(r.loadErrs) > 0 {
		fs = append(fs, failure{checkLoad, fmt.Sprintf("the load failed: %v", errors.Join(r.loadErrs...))})
	}
	if r.idleErr != nil {
		return append(fs, failure{checkIdle, r.idleErr.Error()})
	}
	if len(r.violations) > 0 {
		fs = append(fs, failure{checkInvariants, fmt.Sprintf("%d violations: %v", len(r.violations), r.violations)})
	}
	if !r.history.OK() {
		fs = append(fs, failure{checkLinearizable, "fenced operations not linearizable: " + r.history.String()})
	}
	if len(r.overlaps) > 0 {
		fs = append(fs, failure{checkExclusive, fmt.Sprintf("%d fenced operations refused while their lock could not have run out: %s", len(r.overlaps), describeOverlaps(r.overlaps, 5))})
	}
	if len(r.fencesBack) > 0 {
		fs = append(fs, failure{checkFences, fmt.Sprintf("fences handed out again after a restart: %v", r.fencesBack)})
	}
	// Only a restart of Redis loses acknowledged writes: a webhook's
	// commit the gateway saw, an order or a task the load was told of.
	if len(r.restarts) == 0 && len(r.report.Unreconciled) > 0 {
		fs = append(fs, failure{checkReconciled, fmt.Sprintf("gateway ahead of the ledger without a restart: %v", r.report.Unreconciled)})
	}
	if len(r.tasks.lost) > 0 {
		fs = append(fs, failure{checkLost, fmt.Sprintf("tasks neither completed nor archived with a reason: %v", r.tasks.lost)})
	}
	if len(r.restarts) == 0 && r.vanished > 0 {
		fs = append(fs, failure{checkLost, fmt.Sprintf("%d orders, ticket types or revokes gone without a restart", r.vanished)})
	}
	if len(r.leftovers) > 0 {
		fs = append(fs, failure{checkLeftovers, fmt.Sprintf("lock keys or parked lists outlived their TTLs: %v", r.leftovers)})
	}
	return fs
}

// measure derives throughput and recovery from the completion times,
// which asynq keeps in whole seconds: a fault's window is counted in whole
// seconds, from the second its signal was sent to the second it ended.
func (r *result) measure(loadStart, loadEnd time.Time) {
	first, last := loadStart.Truncate(time.Second), loadEnd.Truncate(time.Second)
	faulty := map[time.Time]bool{}
	for _, f := range r.faults {
		for s := f.at.Truncate(time.Second); !s.After(f.end); s = s.Add(time.Second) {
			faulty[s] = true
		}
	}
	var nFault, nClean int
	for _, c := range r.tasks.completedAt {
		switch {
		case c.Before(first) || !c.Before(last):
		case faulty[c]:
			nFault++
		default:
			nClean++
		}
	}
	secs := int(last.Sub(first) / time.Second)
	r.rateClean = float64(nClean) / float64(secs-len(faulty))
	r.rateFault = float64(nFault) / float64(len(faulty))
	for i := range r.faults {
		f := &r.faults[i]
		// Per order the worker held, its first completion since the
		// fault began; the fault's recovery is the latest of those.
		var latest time.Time
		for _, res := range f.held {
			var first time.Time
			for _, c := range r.tasks.completedOn[res] {
				if !c.Before(f.at.Truncate(time.Second)) && (first.IsZero() || c.Before(first)) {
					first = c
				}
			}
			if first.After(latest) {
				latest = first
			}
		}
		if latest.IsZero() {
			r.unmeasured++
			continue
		}
		f.recovery, f.recovered = max(0, latest.Sub(f.end)).Round(time.Second), true
		r.recoveries = append(r.recoveries, f.recovery)
	}
}

// summary is one line for the run's log.
func (r *result) summary(l *load) string {
	return fmt.Sprintf("%d checkouts (%d reserved, %d sold out), %d tasks tracked (%d over HTTP): %d completed, %d archived, %d lost (%d tasks and %d steps gone with Redis, %d orders to reconcile); "+
		"%d fenced ops (%d refused by the ledger, %d jobs failed on a stale fence), %d leases lost, %d resources not linearizable, %d refused within their lock's TTL; %d violations; %d leftovers (%d parked keys and wanted marks within their TTL); %.1f tasks/s clean, %.1f in faults; recoveries %v (%d unmeasured); idle after %s",
		r.started, l.reserved, l.soldOut, len(l.tasks), l.viaAPI, r.tasks.completed, r.tasks.archived, len(r.tasks.lost), r.tasks.lostWithRedis, r.vanished, len(r.report.Unreconciled),
		r.history.Totals().Ops, r.history.Totals().Refused, r.logs.refused, r.logs.leaseLost, len(r.history.Violations()), len(r.overlaps), len(r.violations), len(r.leftovers), r.parkedIndexes, r.rateClean, r.rateFault,
		r.recoveries, r.unmeasured, r.idle.Round(time.Millisecond))
}

// table sums the runs by scenario, in scenario order.
func table(results []result) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\truns\tfailed\tfaults\ttasks completed\tarchived\tlost\tlost with Redis\tto reconcile\tfenced ops refused\tleases lost\tinvariant violations\tlinearizability violations\texclusion violations\tleftover keys\ttasks/s clean\ttasks/s in faults\tp99 recovery\tmax idle wait\t")
	order := []string{}
	for _, s := range append(scenarios(false), scenarios(true)...) {
		if !slices.Contains(order, s.name) {
			order = append(order, s.name)
		}
	}
	for _, name := range order {
		var (
			runs, failed, faults, completed, archived, lost, lostWithRedis, unreconciled, refused, leaseLost, violations, nonLinear, overlapping, leftover int
			clean, inFault                                                                                                                                 []float64
			recoveries                                                                                                                                     []time.Duration
			idle                                                                                                                                           time.Duration
		)
		for _, r := range results {
			if r.scenario != name {
				continue
			}
			runs++
			if r.failed {
				failed++
			}
			faults += len(r.faults)
			completed += r.tasks.completed
			archived += r.tasks.archived
			lost += len(r.tasks.lost)
			lostWithRedis += r.tasks.lostWithRedis + r.vanished
			unreconciled += len(r.report.Unreconciled)
			refused += r.history.Totals().Refused
			nonLinear += len(r.history.Violations())
			overlapping += len(r.overlaps)
			leaseLost += r.logs.leaseLost
			violations += len(r.violations)
			leftover += len(r.leftovers)
			clean = append(clean, r.rateClean)
			if len(r.faults) > 0 {
				inFault = append(inFault, r.rateFault)
			}
			recoveries = append(recoveries, r.recoveries...)
			idle = max(idle, r.idle)
		}
		if runs == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", name, runs, failed, faults, completed, archived, lost, lostWithRedis, unreconciled,
			refused, leaseLost, violations, nonLinear, overlapping, leftover, median(clean), median(inFault), p99(recoveries), idle.Round(time.Second))
	}
	_ = tw.Flush() // into a strings.Builder, which does not fail
	return b.String() + "\n" + kindTable(results)
}

// kindTable sums the faults by kind, across scenarios, so that each kind
// shows even where CI runs several in one scenario (Net, Mixed): how
// many, how many struck a worker mid-job, and how long the orders it held
// took to complete a task again (recoveries are per fault; the fenced and
// lease counts of the table above are per run, so they stay there).
func kindTable(results []result) string {
	type sums struct {
		faults, midJob int
		recoveries     []time.Duration
	}
	byKind := map[faultKind]*sums{}
	var kinds []faultKind
	for _, r := range results {
		for _, f := range r.faults {
			s := byKind[f.kind]
			if s == nil {
				s = &sums{}
				byKind[f.kind] = s
				kinds = append(kinds, f.kind)
			}
			s.faults++
			if len(f.held) > 0 {
				s.midJob++
			}
			if f.recovered {
				s.recoveries = append(s.recoveries, f.recovery)
			}
		}
	}
	slices.Sort(kinds)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault kind\tfaults\tmid-job\trecoveries measured\tp99 recovery\t")
	for _, k := range kinds {
		s := byKind[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t\n", k, s.faults, s.midJob, len(s.recoveries), p99(s.recoveries))
	}
	_ = tw.Flush() // into a strings.Builder, which does not fail
	return b.String()
}

// median of the runs' rates, "-" for none.
func median(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	slices.Sort(xs)
	return fmt.Sprintf("%.1f", xs[len(xs)/2])
}

// p99 of the recoveries (nearest rank), "-" for none; with fewer than a
// hundred faults it is their maximum.
func p99(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	i := (99*len(ds)+99)/100 - 1
	return ds[min(i, len(ds)-1)].String()
}
