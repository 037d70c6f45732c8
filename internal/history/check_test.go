package history_test

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// rec is a finished operation on resource "r" of process 1.
func rec(op uint64, token int64, outcome ledger.Outcome, start, end int64) history.Record {
	return history.Record{PID: 1, Op: op, Resource: "r", Token: token, Kind: history.KindCommit, Outcome: outcome, Start: start, End: end}
}

// pending is the record of op before its script was sent.
func pending(r history.Record) history.Record {
	r.Outcome, r.End = ledger.OutcomePending, 0
	return r
}

func TestCheck(t *testing.T) {
	t.Parallel()
	const (
		ok  = history.Linearizable
		bad = history.Violation
	)
	for _, tc := range []struct {
		name    string
		records []history.Record
		want    history.Verdict
	}{
		{"Empty", nil, ok},
		{"RisingTokensAccepted", []history.Record{
			rec(1, 1, ledger.OutcomeAccepted, 0, 10),
			rec(2, 1, ledger.OutcomeAccepted, 20, 30), // the same holder's commit after its read
			rec(3, 2, ledger.OutcomeAccepted, 40, 50),
		}, ok},
		{"LateLowerTokenRefused", []history.Record{
			rec(1, 2, ledger.OutcomeAccepted, 0, 10),
			rec(2, 1, ledger.OutcomeRefused, 20, 30),
		}, ok},
		{"LateLowerTokenAccepted", []history.Record{
			rec(1, 2, ledger.OutcomeAccepted, 0, 10),
			rec(2, 1, ledger.OutcomeAccepted, 20, 30),
		}, bad},
		{"OverlappingLowerTokenAcceptedFirst", []history.Record{
			rec(1, 2, ledger.OutcomeAccepted, 0, 30),
			rec(2, 1, ledger.OutcomeAccepted, 10, 20), // may have run before 2
		}, ok},
		{"RefusedWithNothingHigher", []history.Record{
			rec(1, 1, ledger.OutcomeAccepted, 0, 10),
			rec(2, 5, ledger.OutcomeRefused, 20, 30),
		}, bad},
		{"AbortedConstrainsNothing", []history.Record{
			rec(1, 3, ledger.OutcomeAccepted, 0, 10),
			rec(2, 1, ledger.OutcomeAborted, 20, 30),
			rec(3, 9, ledger.OutcomeAborted, 40, 50),
			rec(4, 4, ledger.OutcomeAccepted, 60, 70),
		}, ok},
		{"UnknownMayHaveRun", []history.Record{
			rec(1, 5, ledger.OutcomeUnknown, 0, 10),
			rec(2, 3, ledger.OutcomeRefused, 20, 30),
		}, ok},
		{"UnknownMayNotHaveRun", []history.Record{
			rec(1, 5, ledger.OutcomeUnknown, 0, 10),
			rec(2, 3, ledger.OutcomeAccepted, 20, 30),
		}, ok},
		{"UnknownMayTakeEffectAfterItsEnd", []history.Record{
			rec(1, 5, ledger.OutcomeUnknown, 0, 10), // a reply lost, not the script: it may run later
			rec(2, 3, ledger.OutcomeAccepted, 20, 30),
			rec(3, 4, ledger.OutcomeRefused, 40, 50),
		}, ok},
		{"UnknownRunsAfterItStarts", []history.Record{
			rec(1, 3, ledger.OutcomeRefused, 0, 10), // nothing can have refused it
			rec(2, 5, ledger.OutcomeUnknown, 20, 30),
		}, bad},
		{"PendingOfADeadProcessMayHaveRun", []history.Record{
			pending(rec(1, 5, ledger.OutcomeAccepted, 0, 10)),
			rec(2, 3, ledger.OutcomeRefused, 20, 30),
		}, ok},
		{"PendingPairsWithItsOutcome", []history.Record{
			pending(rec(1, 5, ledger.OutcomeRefused, 0, 10)),
			rec(1, 5, ledger.OutcomeRefused, 0, 10), // refused with nothing higher
		}, bad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := history.Check(tc.records)
			require.NoError(t, err)
			require.Equal(t, tc.want == ok, res.OK(), res.String())
			if len(tc.records) == 0 {
				require.Empty(t, res.Resources)
				return
			}
			require.Len(t, res.Resources, 1)
			rr := res.Resources[0]
			require.Equal(t, tc.want, rr.Verdict)
			if tc.want == bad {
				require.FileExists(t, rr.Visualization)
				t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(rr.Visualization)) })
				require.Contains(t, res.String(), rr.Visualization)
			}
		})
	}
}

func TestCheck_PartitionsByResource(t *testing.T) {
	t.Parallel()
	a := rec(1, 2, ledger.OutcomeAccepted, 0, 10)
	b := rec(2, 1, ledger.OutcomeAccepted, 20, 30)
	b.Resource = "other" // lower, but of another resource
	c := rec(3, 1, ledger.OutcomeAccepted, 20, 30)
	c.Resource = "order/o-1"
	c.PID = 2 // op 3 of another process
	res, err := history.Check([]history.Record{a, b, c, pending(rec(3, 4, ledger.OutcomeAccepted, 40, 0))})
	require.NoError(t, err)
	require.True(t, res.OK(), res.String())
	require.Len(t, res.Resources, 3)
	require.Equal(t, []string{"order/o-1", "other", "r"}, []string{res.Resources[0].Resource, res.Resources[1].Resource, res.Resources[2].Resource})
	require.Equal(t, history.ResourceResult{Resource: "all", Verdict: history.Linearizable, Ops: 4, Accepted: 3, Unknown: 1}, res.Totals())
}

func TestCheck_BadRecords(t *testing.T) {
	t.Parallel()
	for name, r := range map[string]history.Record{
		"Kind":       {Kind: "write", Outcome: ledger.OutcomeAccepted},
		"Outcome":    {Kind: history.KindRead, Outcome: "maybe"},
		"EndsBefore": rec(1, 1, ledger.OutcomeAccepted, 10, 5),
		"EndedTwice": rec(7, 1, ledger.OutcomeAccepted, 0, 5),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			records := []history.Record{r}
			if name == "EndedTwice" {
				records = append(records, r)
			}
			_, err := history.Check(records)
			require.Error(t, err)
		})
	}
}

// simulated returns a history of n operations on one resource that a
// correct store could give: each takes effect at its own instant, in
// order, and its interval spans that instant by up to spread on each side,
// so up to about 2*spread/step operations overlap. Tokens rise, and one
// operation in four carries an older holder's token and is refused.
func simulated(n int, spread int64) []history.Record {
	const step = 10
	rnd := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // G404: a reproducible history
	var out []history.Record
	highest := int64(0)
	for i := range n {
		at := int64(i) * step
		token := highest + 1 + rnd.Int64N(3)
		if rnd.IntN(4) == 0 && highest > 1 {
			token = highest - 1 - rnd.Int64N(highest-1)
		}
		outcome := ledger.OutcomeRefused
		if token >= highest {
			outcome, highest = ledger.OutcomeAccepted, token
		}
		out = append(out, rec(uint64(i+1), token, outcome, at-rnd.Int64N(spread), at+rnd.Int64N(spread)))
	}
	return out
}

func TestCheck_Simulated(t *testing.T) {
	t.Parallel()
	records := simulated(500, 80)
	res, err := history.Check(records)
	require.NoError(t, err)
	require.True(t, res.OK(), res.String())
	// One accepted late operation, no longer overlapping anything that
	// could have come first, breaks it.
	var last history.Record
	for _, r := range records {
		if r.Outcome == ledger.OutcomeAccepted {
			last = r
		}
	}
	late := rec(99999, last.Token-1, ledger.OutcomeAccepted, last.End+1000, last.End+1010)
	res, err = history.Check(append(records, late))
	require.NoError(t, err)
	require.False(t, res.OK())
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(res.Violations()[0].Visualization)) })
}

// BenchmarkCheck is porcupine's time on one resource's 1000 operations,
// about 16 in flight at once.
func BenchmarkCheck(b *testing.B) {
	records := simulated(1000, 80)
	for b.Loop() {
		res, err := history.Check(records)
		if err != nil || !res.OK() {
			b.Fatal(err, res)
		}
	}
}
