package history

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// CheckTimeout bounds the search on one epoch of one resource. Porcupine's
// search is exponential in the worst case; a fenced register with a few
// concurrent holders takes milliseconds, so a resource that hits this is
// reported Undecided rather than waited on.
const CheckTimeout = time.Minute

// A Verdict is what Check found on one resource.
type Verdict string

// The verdicts.
const (
	// Linearizable: some order of the operations, each placed within its
	// interval, explains every outcome by the fenced register.
	Linearizable Verdict = "linearizable"
	// Violation: no order does, for example an accepted token lower than
	// one accepted by an operation that had already returned.
	Violation Verdict = "violation"
	// Undecided: the search ran out of CheckTimeout.
	Undecided Verdict = "undecided"
)

// A ResourceResult is the verdict on one resource's operations, with their
// counts by outcome (pending operations that never returned count as
// Unknown). Each operation counts once, even when it falls in two epochs.
type ResourceResult struct {
	Resource string
	Verdict  Verdict
	// Epoch is the epoch the Verdict comes from when it is not
	// Linearizable: 0 before the first restart, i after restart i (see
	// Checker). Always 0 without restarts.
	Epoch    int
	Ops      int
	Accepted int
	Refused  int
	Aborted  int
	Unknown  int
	// Visualization is the path of porcupine's HTML rendering of the
	// epoch's history when it is not linearizable: the longest
	// linearizable prefix and the operation that breaks it.
	Visualization string
}

// A Result is Check's verdict on every resource, sorted by resource.
type Result struct {
	Resources []ResourceResult
	// Restarts are the Checker's, sorted: what a ResourceResult's Epoch
	// counts.
	Restarts []Restart
}

// OK is true when every resource is linearizable.
func (r Result) OK() bool { return len(r.Violations()) == 0 }

// Violations returns the resources that are not linearizable, or were not
// decided.
func (r Result) Violations() []ResourceResult {
	var out []ResourceResult
	for _, rr := range r.Resources {
		if rr.Verdict != Linearizable {
			out = append(out, rr)
		}
	}
	return out
}

// Totals returns the counts of every resource added up.
func (r Result) Totals() ResourceResult {
	t := ResourceResult{Resource: "all", Verdict: Linearizable}
	for _, rr := range r.Resources {
		t.Ops += rr.Ops
		t.Accepted += rr.Accepted
		t.Refused += rr.Refused
		t.Aborted += rr.Aborted
		t.Unknown += rr.Unknown
		if rr.Verdict != Linearizable {
			t.Verdict = Violation
		}
	}
	return t
}

// String summarizes the result: totals, then each resource that failed,
// in which epoch when there were restarts, and where to see why.
func (r Result) String() string {
	t := r.Totals()
	var b strings.Builder
	fmt.Fprintf(&b, "%d resources, %d ops (%d accepted, %d refused, %d aborted, %d unknown)",
		len(r.Resources), t.Ops, t.Accepted, t.Refused, t.Aborted, t.Unknown)
	if len(r.Restarts) > 0 {
		fmt.Fprintf(&b, " in %d epochs", len(r.Restarts)+1)
	}
	b.WriteString(": ")
	v := r.Violations()
	if len(v) == 0 {
		b.WriteString("linearizable")
		return b.String()
	}
	fmt.Fprintf(&b, "%d not linearizable", len(v))
	for _, rr := range v {
		fmt.Fprintf(&b, "\n  %s: %s", rr.Resource, rr.Verdict)
		if len(r.Restarts) > 0 {
			fmt.Fprintf(&b, " in %s", r.epochName(rr.Epoch))
		}
		fmt.Fprintf(&b, ", %d ops", rr.Ops)
		if rr.Visualization != "" {
			fmt.Fprintf(&b, ", see %s", rr.Visualization)
		}
	}
	return b.String()
}

// epochName says which stretch of the run epoch i is.
func (r Result) epochName(i int) string {
	if i == 0 || i > len(r.Restarts) {
		return "epoch 0 (before the first restart)"
	}
	return fmt.Sprintf("epoch %d (after the restart at %s)", i, r.Restarts[i-1].Down.Format("15:04:05.000"))
}

// A Restart is a restart of Redis that may have lost writes it had
// acknowledged: a crash under appendfsync everysec, a restart without
// persistence, a failover to a replica that lagged. The server is assumed
// to come back with the writes of some prefix of its history (none, some
// or all of them), which is what an append-only file cut short, a
// snapshot, an empty start and a replica each give.
//
// The two instants bound the restart from either side; the closer they
// are, the fewer operations are left to fall on either side of it.
type Restart struct {
	// Down is taken before the old server is stopped: the new one
	// runs nothing before it.
	Down time.Time
	// Up is taken once the old server is gone, its process waited on
	// (after the new one is up is fine): the old one runs nothing after
	// it. Zero means Down, for a caller that knows the one instant
	// between the two servers.
	Up time.Time
}

// A Checker checks histories in which Redis may have restarted and lost
// writes. The zero value checks a history without restarts, as Check does.
//
// A restart breaks the fenced register: the store's fence records come
// back as an earlier state, so a token refused before the restart may be
// accepted after it (an old holder's read of a resource whose record was
// lost) without any defect. The Checker splits each resource's operations
// into epochs at the restarts and checks each epoch on its own: the first
// from the known state 0 of a fresh server, each later one from an unknown
// state between 0 and the highest token written before the restart. An
// operation that can only have run on one server is checked in that
// server's epoch as Check would; one that straddles a restart (started
// before Up, returned after Down, or never answered) may have run on either
// server, or, unanswered, on neither, so it is in each such epoch as one
// that may not have taken effect there.
//
// In the chaos suite, around each restart and then after the run:
//
//	down := time.Now()
//	srv.CrashTo(synced) // kill, cut the append-only file, start again
//	restarts = append(restarts, history.Restart{Down: down, Up: time.Now()})
//	...
//	res, err := history.Checker{Restarts: restarts}.Check(records)
//	if !res.OK() {
//		t.Error(res) // names each failing resource's epoch and its HTML file
//	}
type Checker struct {
	// Restarts, in any order; they must not overlap.
	Restarts []Restart
}

// Check checks each resource's operations for linearizability against a
// fenced register whose state is the highest token taken (initially 0):
// an operation with token t is accepted iff t >= state, and then state =
// t; a refused one leaves state, and so does one aborted by another of its
// fences. Reads and commits alike, as the ledger does. An operation whose
// outcome is unknown, or that was pending when its process died, may have
// taken effect at any time after it started, or never (porcupine is given
// an end of +infinity, as etcd's robustness tests do).
//
// For each resource that is not linearizable, Check writes porcupine's
// visualization to an HTML file in a new temporary directory and names it
// in the result. It returns an error for records it cannot make sense of.
//
// Check is Checker{}.Check: it assumes Redis kept every write it
// acknowledged. See Checker for a history across restarts that did not.
func Check(records []Record) (Result, error) {
	return Checker{}.Check(records)
}

// Check checks records as the package's Check does, one epoch at a time
// (see Checker). A resource is linearizable if every epoch of it is; the
// result names the first epoch that is not, and its visualization is of
// that epoch, with the restarts drawn in. Check returns an error for
// records it cannot make sense of and for restarts that overlap.
func (c Checker) Check(records []Record) (Result, error) {
	restarts, err := sortedRestarts(c.Restarts)
	if err != nil {
		return Result{}, err
	}
	ops, err := operations(records)
	if err != nil {
		return Result{}, err
	}
	byResource := map[string][]op{}
	for _, o := range ops {
		byResource[o.Resource] = append(byResource[o.Resource], o)
	}
	res := Result{Restarts: restarts}
	dir := ""
	for _, resource := range slices.Sorted(maps.Keys(byResource)) {
		rr, info, model := checkResource(resource, byResource[resource], restarts)
		if rr.Verdict == Violation {
			if dir == "" {
				if dir, err = os.MkdirTemp("", "turnstile-history-"); err != nil {
					return Result{}, fmt.Errorf("history: check: %w", err)
				}
			}
			name := fmt.Sprintf("%03d-%s.html", len(res.Violations()), fileSafe(resource))
			if len(restarts) > 0 {
				name = fmt.Sprintf("%03d-%s-epoch%d.html", len(res.Violations()), fileSafe(resource), rr.Epoch)
				info.AddAnnotations(restartAnnotations(restarts))
			}
			rr.Visualization = filepath.Join(dir, name)
			if err := porcupine.VisualizePath(model, info, rr.Visualization); err != nil {
				return Result{}, fmt.Errorf("history: visualize %s: %w", resource, err)
			}
		}
		res.Resources = append(res.Resources, rr)
	}
	return res, nil
}

// sortedRestarts returns the restarts sorted, with Up filled in, or an
// error for one that ends before it starts or overlaps the next.
func sortedRestarts(in []Restart) ([]Restart, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := slices.Clone(in)
	for i, r := range out {
		if r.Down.IsZero() {
			return nil, errors.New("history: a restart without its Down instant")
		}
		if r.Up.IsZero() {
			out[i].Up = r.Down
		}
		if out[i].Up.Before(r.Down) {
			return nil, fmt.Errorf("history: a restart up at %s before it went down at %s", out[i].Up.Format(time.RFC3339Nano), r.Down.Format(time.RFC3339Nano))
		}
	}
	slices.SortFunc(out, func(a, b Restart) int { return a.Down.Compare(b.Down) })
	for i := 1; i < len(out); i++ {
		if out[i].Down.Before(out[i-1].Up) {
			return nil, fmt.Errorf("history: the restart down at %s overlaps the one up at %s", out[i].Down.Format(time.RFC3339Nano), out[i-1].Up.Format(time.RFC3339Nano))
		}
	}
	return out, nil
}

// restartAnnotations draws each restart on a row of its own.
func restartAnnotations(restarts []Restart) []porcupine.Annotation {
	out := make([]porcupine.Annotation, 0, len(restarts))
	for i, r := range restarts {
		out = append(out, porcupine.Annotation{
			Tag: "redis", Start: r.Down.UnixNano(), End: r.Up.UnixNano(),
			Description: fmt.Sprintf("restart %d", i+1),
			Details:     "writes acknowledged before it may be lost; epoch " + fmt.Sprint(i+1) + " starts from an unknown state",
		})
	}
	return out
}

// An op is one operation, paired: its record with its outcome (Unknown
// for a pending one) and the last instant at which a server it may have
// reached was running it.
type op struct {
	Record
	// last is End, or +infinity for an operation that never returned:
	// an unanswered request can take effect after its End (a reply
	// lost, not the script), but only on a server it reached before
	// then, since a restart drops every connection to the old one.
	last int64
}

// writes reports whether o may have raised the resource's fence record:
// refused and aborted operations write nothing.
func (o op) writes() bool {
	return o.Outcome == ledger.OutcomeAccepted || o.Outcome == ledger.OutcomeUnknown
}

// A step is an op as one epoch's porcupine sees it.
type step struct {
	Record
	// maybe: the op may have taken effect in another epoch instead (it
	// straddles a restart), so in this one it may also not have.
	maybe bool
}

// An epoch is the stretch of time one server ran: it ran nothing before
// from (the restart's Down) nor after to (the next restart's Up).
type epoch struct {
	from, to int64
	// highest bounds the state the server started from: 0 for the
	// first, and after a restart the highest token written before it.
	highest int64
}

// epochs returns the epochs of restarts; their highest is left 0.
func epochs(restarts []Restart) []epoch {
	out := []epoch{{from: math.MinInt64, to: math.MaxInt64}}
	for _, r := range restarts {
		out[len(out)-1].to = r.Up.UnixNano()
		out = append(out, epoch{from: r.Down.UnixNano(), to: math.MaxInt64})
	}
	return out
}

// checkResource checks one resource's ops, epoch by epoch. On the first
// epoch that is a violation it stops and returns porcupine's info on it
// and the model it was checked with, for the visualization; otherwise the
// verdict is Undecided if an epoch was.
func checkResource(resource string, ops []op, restarts []Restart) (ResourceResult, porcupine.LinearizationInfo, porcupine.Model) {
	rr := ResourceResult{Resource: resource, Ops: len(ops), Verdict: Linearizable}
	for _, o := range ops {
		switch o.Outcome {
		case ledger.OutcomeAccepted:
			rr.Accepted++
		case ledger.OutcomeRefused:
			rr.Refused++
		case ledger.OutcomeAborted:
			rr.Aborted++
		default:
			rr.Unknown++
		}
	}
	eps := epochs(restarts)
	// An op is in each epoch whose server may have run it. Inclusive
	// bounds: counting an op in one more epoch only makes it a maybe,
	// which is sound; leaving it out of one where it ran is not.
	in := func(o op, e epoch) bool { return o.Start <= e.to && o.last >= e.from }
	// The state after restart i is some prefix's: at most the highest
	// token that may have been written before the old server died.
	for i := 1; i < len(eps); i++ {
		for _, o := range ops {
			if o.writes() && o.Start <= eps[i-1].to {
				eps[i].highest = max(eps[i].highest, o.Token)
			}
		}
	}
	// An op that more than one epoch may have run is a maybe in each,
	// even with a definite outcome: placing it in the later epoch alone
	// is not sound, since a reply read after Down may come from the old
	// server, whose write the restart then lost (an accepted 900 there,
	// then 800 accepted after the restart, is no defect).
	maybe := make([]bool, len(ops))
	for j, o := range ops {
		n := 0
		for _, e := range eps {
			if in(o, e) {
				n++
			}
		}
		maybe[j] = n > 1
	}
	for i, e := range eps {
		var steps []porcupine.Operation
		for j, o := range ops {
			if !in(o, e) {
				continue
			}
			s := porcupine.Operation{Input: step{Record: o.Record, maybe: maybe[j]}, Call: max(o.Start, e.from), Return: o.End}
			if o.Outcome == ledger.OutcomeUnknown {
				s.Return = math.MaxInt64
			}
			steps = append(steps, s)
		}
		if len(steps) == 0 {
			continue
		}
		assignLanes(steps)
		m := fencedRegister(state{lo: 0, hi: e.highest})
		result, info := porcupine.CheckOperationsVerbose(m, steps, CheckTimeout)
		switch {
		case result == porcupine.Illegal:
			rr.Verdict, rr.Epoch = Violation, i
			return rr, info, m
		case result != porcupine.Ok && rr.Verdict == Linearizable:
			// Undecided, unless a later epoch is a violation.
			rr.Verdict, rr.Epoch = Undecided, i
		}
	}
	return rr, porcupine.LinearizationInfo{}, porcupine.Model{}
}

// operations pairs each pending record with its outcome, by process,
// operation and fence, and makes one op of each. A pending record left
// alone is an operation whose process died before it returned: unknown,
// and never over.
func operations(records []Record) ([]op, error) {
	type key struct {
		pid      int
		op       uint64
		resource string
		token    int64
	}
	final := map[key]Record{}
	var order []key
	for i, r := range records {
		if err := valid(r); err != nil {
			return nil, fmt.Errorf("history: record %d: %w", i+1, err)
		}
		k := key{r.PID, r.Op, r.Resource, r.Token}
		prev, seen := final[k]
		switch {
		case !seen:
			order = append(order, k)
			final[k] = r
		case prev.Outcome == ledger.OutcomePending:
			final[k] = r
		case r.Outcome != ledger.OutcomePending:
			return nil, fmt.Errorf("history: record %d: op %d of pid %d on %s ended twice", i+1, r.Op, r.PID, r.Resource)
		}
	}
	ops := make([]op, 0, len(order))
	for _, k := range order {
		r := final[k]
		o := op{Record: r, last: r.End}
		switch r.Outcome {
		case ledger.OutcomePending:
			o.Outcome, o.last = ledger.OutcomeUnknown, math.MaxInt64
		case ledger.OutcomeUnknown:
			o.last = max(r.End, r.Start) // an unknown End is kept, but may be 0
		}
		ops = append(ops, o)
	}
	return ops, nil
}

// valid checks what Check relies on.
func valid(r Record) error {
	if r.Kind != KindRead && r.Kind != KindCommit {
		return fmt.Errorf("kind %q", r.Kind)
	}
	switch r.Outcome {
	case ledger.OutcomePending, ledger.OutcomeUnknown:
	case ledger.OutcomeAccepted, ledger.OutcomeRefused, ledger.OutcomeAborted:
		if r.End < r.Start {
			return fmt.Errorf("op %d of pid %d ends at %d before it starts at %d", r.Op, r.PID, r.End, r.Start)
		}
	default:
		return fmt.Errorf("outcome %q", r.Outcome)
	}
	return nil
}

// assignLanes gives each operation a ClientId such that one client's
// operations do not overlap, which porcupine's visualization draws as one
// row each (the checker itself ignores it). Greedy by start time, so the
// rows are as few as the most operations in flight at once.
func assignLanes(ops []porcupine.Operation) {
	idx := make([]int, len(ops))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(ops[a].Call, ops[b].Call) })
	var laneEnd []int64
	for _, i := range idx {
		lane := slices.IndexFunc(laneEnd, func(end int64) bool { return end < ops[i].Call })
		if lane < 0 {
			lane = len(laneEnd)
			laneEnd = append(laneEnd, 0)
		}
		laneEnd[lane] = ops[i].Return
		ops[i].ClientId = lane
	}
}

// A state is what the model knows of the highest token the store has
// taken for the resource: that it lies in [lo, hi]. A fresh server's is
// known, [0, 0], and so is any once a token has been accepted; after a
// restart only its bounds are, until an acceptance pins it. A refusal of
// t teaches that it is above t.
type state struct{ lo, hi int64 }

// accept is the state after t was accepted, if it can have been: some
// highest <= t must be possible, and then t is the highest.
func (s state) accept(t int64) (state, bool) {
	return state{t, t}, s.lo <= t
}

// refuse is the state after t was refused, if it can have been: some
// highest > t must be possible, and then only those are.
func (s state) refuse(t int64) (state, bool) {
	return state{max(s.lo, t+1), s.hi}, s.hi > t
}

func (s state) String() string {
	if s.lo == s.hi {
		return fmt.Sprintf("highest %d", s.lo)
	}
	return fmt.Sprintf("highest in [%d, %d]", s.lo, s.hi)
}

// fencedRegister is the model of an epoch that starts from init: a
// register holding the highest token taken. It is nondeterministic for
// unknown operations, which may or may not have taken effect, and for an
// epoch's maybe operations, which may have taken effect in another.
func fencedRegister(init state) porcupine.Model {
	return (&porcupine.NondeterministicModel{
		Init: func() []any { return []any{init} },
		Step: func(st, input, _ any) []any {
			s, in := st.(state), input.(step)
			switch {
			case in.Outcome == ledger.OutcomeAborted:
				return []any{s}
			case in.maybe && in.Outcome == ledger.OutcomeRefused:
				return []any{s} // refused here, or elsewhere: a constraint on neither
			case in.Outcome == ledger.OutcomeAccepted && !in.maybe:
				if next, ok := s.accept(in.Token); ok {
					return []any{next}
				}
				return nil
			case in.Outcome == ledger.OutcomeRefused:
				if next, ok := s.refuse(in.Token); ok {
					return []any{next}
				}
				return nil
			default: // unknown, or accepted in some epoch: it ran here, or it did not
				// (A run that was refused leaves a subset of s: covered by s.)
				if next, ok := s.accept(in.Token); ok && next != s {
					return []any{s, next}
				}
				return []any{s}
			}
		},
		Hash: func(st any) uint64 {
			s := st.(state)
			return uint64(s.lo)*0x9e3779b97f4a7c15 ^ uint64(s.hi) //nolint:gosec // G115: a hash, wrapping is fine
		},
		DescribeOperation: func(input, _ any) string {
			in := input.(step)
			maybe := ""
			if in.maybe {
				maybe = " (maybe in another epoch)"
			}
			return fmt.Sprintf("%s %d -> %s%s (pid %d op %d)", in.Kind, in.Token, in.Outcome, maybe, in.PID, in.Op)
		},
		DescribeState: func(st any) string { return st.(state).String() },
	}).ToModel()
}

// fileSafe makes a resource name usable in a file name.
func fileSafe(resource string) string {
	return unsafeChars.ReplaceAllString(resource, "_")
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
