package history

import (
	"cmp"
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

// CheckTimeout bounds the search on one resource. Porcupine's search is
// exponential in the worst case; a fenced register with a few concurrent
// holders takes milliseconds, so a resource that hits this is reported
// Undecided rather than waited on.
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
// Unknown).
type ResourceResult struct {
	Resource string
	Verdict  Verdict
	Ops      int
	Accepted int
	Refused  int
	Aborted  int
	Unknown  int
	// Visualization is the path of porcupine's HTML rendering of the
	// resource's history when it is not linearizable: the longest
	// linearizable prefix and the operation that breaks it.
	Visualization string
}

// A Result is Check's verdict on every resource, sorted by resource.
type Result struct {
	Resources []ResourceResult
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

// String summarizes the result: totals, then each resource that failed
// and where to see why.
func (r Result) String() string {
	t := r.Totals()
	var b strings.Builder
	fmt.Fprintf(&b, "%d resources, %d ops (%d accepted, %d refused, %d aborted, %d unknown): ",
		len(r.Resources), t.Ops, t.Accepted, t.Refused, t.Aborted, t.Unknown)
	v := r.Violations()
	if len(v) == 0 {
		b.WriteString("linearizable")
		return b.String()
	}
	fmt.Fprintf(&b, "%d not linearizable", len(v))
	for _, rr := range v {
		fmt.Fprintf(&b, "\n  %s: %s, %d ops", rr.Resource, rr.Verdict, rr.Ops)
		if rr.Visualization != "" {
			fmt.Fprintf(&b, ", see %s", rr.Visualization)
		}
	}
	return b.String()
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
func Check(records []Record) (Result, error) {
	ops, err := operations(records)
	if err != nil {
		return Result{}, err
	}
	byResource := map[string][]porcupine.Operation{}
	for _, op := range ops {
		r := op.Input.(Record).Resource
		byResource[r] = append(byResource[r], op)
	}
	var res Result
	dir := ""
	for _, resource := range slices.Sorted(maps.Keys(byResource)) {
		rr, info := checkResource(resource, byResource[resource])
		if rr.Verdict == Violation {
			if dir == "" {
				if dir, err = os.MkdirTemp("", "turnstile-history-"); err != nil {
					return Result{}, fmt.Errorf("history: check: %w", err)
				}
			}
			rr.Visualization = filepath.Join(dir, fmt.Sprintf("%03d-%s.html", len(res.Violations()), fileSafe(resource)))
			if err := porcupine.VisualizePath(fencedRegister, info, rr.Visualization); err != nil {
				return Result{}, fmt.Errorf("history: visualize %s: %w", resource, err)
			}
		}
		res.Resources = append(res.Resources, rr)
	}
	return res, nil
}

// checkResource runs porcupine on one resource's operations.
func checkResource(resource string, ops []porcupine.Operation) (ResourceResult, porcupine.LinearizationInfo) {
	rr := ResourceResult{Resource: resource, Ops: len(ops)}
	for _, op := range ops {
		switch op.Input.(Record).Outcome {
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
	assignLanes(ops)
	result, info := porcupine.CheckOperationsVerbose(fencedRegister, ops, CheckTimeout)
	switch result {
	case porcupine.Ok:
		rr.Verdict = Linearizable
	case porcupine.Illegal:
		rr.Verdict = Violation
	default:
		rr.Verdict = Undecided
	}
	return rr, info
}

// operations pairs each pending record with its outcome, by process,
// operation and fence, and makes one porcupine operation of each. A
// pending record left alone is an operation whose process died before it
// returned: unknown. Unknown operations end at +infinity.
func operations(records []Record) ([]porcupine.Operation, error) {
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
	ops := make([]porcupine.Operation, 0, len(order))
	for _, k := range order {
		r := final[k]
		end := r.End
		if r.Outcome == ledger.OutcomePending || r.Outcome == ledger.OutcomeUnknown {
			r.Outcome, end = ledger.OutcomeUnknown, math.MaxInt64
		}
		ops = append(ops, porcupine.Operation{Input: r, Call: r.Start, Return: end})
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

// fencedRegister is the model: a register holding the highest token taken.
// It is nondeterministic only for unknown operations, which may or may not
// have taken effect.
var fencedRegister = (&porcupine.NondeterministicModel{
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, _ any) []any {
		highest, r := state.(int64), input.(Record)
		switch r.Outcome {
		case ledger.OutcomeAccepted:
			if r.Token >= highest {
				return []any{r.Token}
			}
			return nil
		case ledger.OutcomeRefused:
			if r.Token < highest {
				return []any{highest}
			}
			return nil
		case ledger.OutcomeAborted:
			return []any{highest}
		default: // unknown: it ran, or it did not
			if r.Token >= highest {
				return []any{highest, r.Token}
			}
			return []any{highest}
		}
	},
	Hash: func(state any) uint64 { return uint64(state.(int64)) },
	DescribeOperation: func(input, _ any) string {
		r := input.(Record)
		return fmt.Sprintf("%s %d -> %s (pid %d op %d)", r.Kind, r.Token, r.Outcome, r.PID, r.Op)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("highest %d", state.(int64)) },
}).ToModel()

// fileSafe makes a resource name usable in a file name.
func fileSafe(resource string) string {
	return unsafeChars.ReplaceAllString(resource, "_")
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
