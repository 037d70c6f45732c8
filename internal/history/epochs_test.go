package history_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// t0 is the start of the epochs tests' histories; they count in
// milliseconds from it.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// ms is t0 plus n milliseconds, as a Record's instant.
func ms(n int64) int64 { return t0.Add(time.Duration(n) * time.Millisecond).UnixNano() }

// at is a finished operation on resource "r", in milliseconds from t0.
func at(op uint64, token int64, outcome ledger.Outcome, start, end int64) history.Record {
	return rec(op, token, outcome, ms(start), ms(end))
}

// restart is a restart at one instant, in milliseconds from t0.
func restart(n int64) history.Restart {
	return history.Restart{Down: time.Unix(0, ms(n))}
}

// checkWith checks records with restarts and returns the verdict on "r",
// removing any visualization once the test is done.
func checkWith(t *testing.T, records []history.Record, restarts ...history.Restart) (history.Result, history.ResourceResult) {
	t.Helper()
	res, err := history.Checker{Restarts: restarts}.Check(records)
	require.NoError(t, err)
	require.Len(t, res.Resources, 1)
	rr := res.Resources[0]
	if rr.Visualization != "" {
		t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(rr.Visualization)) })
	}
	return res, rr
}

func TestChecker_Restarts(t *testing.T) {
	t.Parallel()
	const (
		ok  = history.Linearizable
		bad = history.Violation
	)
	acc, ref, unk := ledger.OutcomeAccepted, ledger.OutcomeRefused, ledger.OutcomeUnknown
	for _, tc := range []struct {
		name     string
		records  []history.Record
		restarts []history.Restart
		// without is the verdict with no restarts given, with the one
		// with them, and epoch the epoch it names when bad.
		without, with history.Verdict
		epoch         int
	}{
		{"LostFenceAcceptsOldToken", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 800, acc, 100, 110), // an old holder, its fence record lost
		}, []history.Restart{restart(50)}, bad, ok, 0},
		{"RefusedBeforeAcceptedAfter", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 800, ref, 20, 30),
			at(3, 800, acc, 100, 110), // the same holder, after the restart
		}, []history.Restart{restart(50)}, bad, ok, 0},
		{"LowerAcceptedWithinEpochBefore", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 800, acc, 20, 30), // no restart between them
			at(3, 100, acc, 100, 110),
		}, []history.Restart{restart(50)}, bad, bad, 0},
		{"LowerAcceptedWithinEpochAfter", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 500, acc, 100, 110),
			at(3, 400, acc, 120, 130), // the restart lies before both
		}, []history.Restart{restart(50)}, bad, bad, 1},
		{"ViolationNamesItsEpoch", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 500, acc, 100, 110),
			at(3, 600, acc, 200, 210),
			at(4, 550, acc, 220, 230), // below 600, in epoch 2
		}, []history.Restart{restart(150), restart(50)}, bad, bad, 2},

		// After a restart the state is unknown, between 0 and the highest
		// token written before it; a refusal raises the floor.
		{"RefusalAfterRestartNeedsAHigherPast", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 850, ref, 100, 110), // 900 may have survived
		}, []history.Restart{restart(50)}, ok, ok, 0},
		{"RefusalAboveAllThePast", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 950, ref, 100, 110), // nothing was ever above 950
		}, []history.Restart{restart(50)}, bad, bad, 1},
		{"RefusalFloorRefusesLowerAcceptance", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 700, ref, 100, 110), // the store holds above 700
			at(3, 600, acc, 120, 130), // so 600 cannot be accepted
		}, []history.Restart{restart(50)}, bad, bad, 1},
		{"RefusalFloorAllowsHigherAcceptance", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 700, ref, 100, 110),
			at(3, 800, acc, 120, 130), // 701..800 may be what survived
		}, []history.Restart{restart(50)}, bad, ok, 0},
		{"AcceptanceAfterRestartIsKnown", []history.Record{
			at(1, 900, acc, 0, 10),
			at(2, 800, acc, 100, 110),
			at(3, 850, ref, 120, 130), // the store holds 800 now
		}, []history.Restart{restart(50)}, bad, bad, 1},

		// Operations that straddle a restart may have run on either server.
		{"StraddlerRanBeforeTheCrashAndWasLost", []history.Record{
			at(1, 900, acc, 40, 60),   // ran before the crash, reply read after
			at(2, 800, acc, 100, 110), // its record lost
		}, []history.Restart{restart(50)}, bad, ok, 0},
		{"StraddlerRefusedAfterTheRestart", []history.Record{
			at(1, 100, acc, 0, 10),
			at(2, 50, ref, 40, 60),   // refused by the old server, reply read after the restart
			at(3, 20, acc, 100, 110), // the new server lost 100: no floor of 51 after the restart
		}, []history.Restart{restart(50)}, bad, ok, 0},
		{"PendingMayHaveRunBeforeTheCrash", []history.Record{
			pending(at(1, 900, acc, 40, 0)), // its process died
			at(2, 850, ref, 42, 48),         // only 900 explains this, before the restart
		}, []history.Restart{restart(50)}, ok, ok, 0},
		{"PendingMayHaveRunAfterTheRestart", []history.Record{
			pending(at(1, 900, acc, 40, 0)),
			at(2, 100, acc, 60, 70),
			at(3, 850, ref, 80, 90), // only 900 explains this, after 100
		}, []history.Restart{restart(50)}, ok, ok, 0},
		{"UnknownStraddlerMayHaveRunAfterTheRestart", []history.Record{
			at(1, 900, unk, 40, 55), // a client retry reached the new server
			at(2, 100, acc, 60, 70),
			at(3, 850, ref, 80, 90),
		}, []history.Restart{restart(50)}, ok, ok, 0},
		{"UnknownDiesWithItsServer", []history.Record{
			at(1, 900, unk, 0, 10), // answered before the restart: cannot run after it
			at(2, 100, acc, 60, 70),
			at(3, 850, ref, 80, 90),
		}, []history.Restart{restart(50)}, ok, bad, 1},

		// A restart known only to lie between Down and Up.
		{"OpWithinTheRestartWindowMayBeOld", []history.Record{
			at(1, 900, acc, 52, 54),   // the old server may still have run it
			at(2, 800, acc, 100, 110), // and lost it
		}, []history.Restart{{Down: time.Unix(0, ms(50)), Up: time.Unix(0, ms(55))}}, bad, ok, 0},
		{"OpAfterTheRestartWindowIsNew", []history.Record{
			at(1, 900, acc, 56, 58),
			at(2, 800, acc, 100, 110),
		}, []history.Restart{{Down: time.Unix(0, ms(50)), Up: time.Unix(0, ms(55))}}, bad, bad, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, rr := checkWith(t, tc.records)
			require.Equal(t, tc.without, rr.Verdict, "without restarts")
			res, rr := checkWith(t, tc.records, tc.restarts...)
			require.Equal(t, tc.with, rr.Verdict, "with restarts: %s", res)
			require.Equal(t, len(tc.records), rr.Ops)
			if tc.with == bad {
				require.Equal(t, tc.epoch, rr.Epoch)
				require.FileExists(t, rr.Visualization)
				require.Contains(t, rr.Visualization, fmt.Sprintf("epoch%d", tc.epoch))
				require.Contains(t, res.String(), fmt.Sprintf("in epoch %d (", tc.epoch))
			}
		})
	}
}

func TestChecker_Result(t *testing.T) {
	t.Parallel()
	records := []history.Record{
		at(1, 900, ledger.OutcomeAccepted, 0, 10),
		at(2, 500, ledger.OutcomeAccepted, 100, 110),
		at(3, 400, ledger.OutcomeAccepted, 120, 130),
		pending(at(4, 950, ledger.OutcomeAccepted, 40, 0)), // in both epochs, counted once
	}
	r := restart(50)
	res, rr := checkWith(t, records, r)
	require.Equal(t, []history.Restart{{Down: r.Down, Up: r.Down}}, res.Restarts)
	require.Equal(t, history.ResourceResult{
		Resource: "r", Verdict: history.Violation, Epoch: 1, Ops: 4, Accepted: 3, Unknown: 1, Visualization: rr.Visualization,
	}, rr)
	want := "4 ops (3 accepted, 0 refused, 0 aborted, 1 unknown) in 2 epochs: 1 not linearizable\n" +
		"  r: violation in epoch 1 (after the restart at " + r.Down.Format("15:04:05.000") + "), 4 ops, see " + rr.Visualization
	require.Contains(t, res.String(), want)
	html, err := os.ReadFile(rr.Visualization)
	require.NoError(t, err)
	require.Contains(t, string(html), "restart 1") // the restart is drawn
	require.Contains(t, string(html), "highest in [0, 950]")
}

func TestChecker_BadRestarts(t *testing.T) {
	t.Parallel()
	records := []history.Record{at(1, 1, ledger.OutcomeAccepted, 0, 10)}
	for name, restarts := range map[string][]history.Restart{
		"NoDown":       {{Up: time.Unix(0, ms(10))}},
		"UpBeforeDown": {{Down: time.Unix(0, ms(10)), Up: time.Unix(0, ms(5))}},
		"Overlapping": {
			{Down: time.Unix(0, ms(10)), Up: time.Unix(0, ms(20))},
			{Down: time.Unix(0, ms(15)), Up: time.Unix(0, ms(30))},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := history.Checker{Restarts: restarts}.Check(records)
			require.Error(t, err)
		})
	}
}

// crashing returns a history of n operations on one resource from a store
// that restarts every `every` operations and comes back with the state it
// had some operations back (none, some or all of what it took since),
// and the restarts. As in simulated, intervals span each operation's
// instant by up to spread on each side, and one operation in four
// carries an older holder's token; after a restart such a token may be
// accepted.
func crashing(n, every int, spread int64) ([]history.Record, []history.Restart) {
	const step = 10
	rnd := rand.New(rand.NewPCG(3, 4)) //nolint:gosec // G404: a reproducible history
	var (
		out      []history.Record
		restarts []history.Restart
		past     []int64 // the highest after each operation since the last restart
		highest  int64
		issued   int64 // the lock's counter, which a restart does not set back
	)
	for i := range n {
		at := int64(i) * step
		if i > 0 && i%every == 0 {
			restarts = append(restarts, history.Restart{Down: time.Unix(0, at-step/2)})
			highest = 0
			if k := rnd.IntN(len(past) + 1); k > 0 {
				highest = past[k-1] // a prefix of what it took survives
			}
			past = past[:0]
		}
		issued += 1 + rnd.Int64N(3)
		token := issued
		if rnd.IntN(4) == 0 && issued > 1 {
			token = issued - 1 - rnd.Int64N(min(issued-1, 30))
		}
		outcome := ledger.OutcomeRefused
		if token >= highest {
			outcome, highest = ledger.OutcomeAccepted, token
		}
		past = append(past, highest)
		out = append(out, rec(uint64(i+1), token, outcome, at-rnd.Int64N(spread), at+rnd.Int64N(spread)))
	}
	return out, restarts
}

func TestChecker_SimulatedCrashes(t *testing.T) {
	t.Parallel()
	records, restarts := crashing(1000, 100, 30)
	res, err := history.Checker{Restarts: restarts}.Check(records)
	require.NoError(t, err)
	require.True(t, res.OK(), res.String())
	// The same history is not linearizable without its restarts: the
	// old tokens accepted after them are what the checker must excuse.
	res, err = history.Check(records)
	require.NoError(t, err)
	require.False(t, res.OK())
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(res.Violations()[0].Visualization)) })
	// And one lower token accepted within an epoch still breaks it.
	last := records[len(records)-1]
	late := rec(99999, 1, ledger.OutcomeAccepted, last.End+1000, last.End+1010)
	res, err = history.Checker{Restarts: restarts}.Check(append(records, late))
	require.NoError(t, err)
	require.False(t, res.OK())
	require.Equal(t, len(restarts), res.Resources[0].Epoch)
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(res.Violations()[0].Visualization)) })
	require.Contains(t, res.String(), fmt.Sprintf("epoch %d (", len(restarts)))
}

// BenchmarkChecker_Restarts is BenchmarkCheck's 1000 operations with a
// restart every 100, checked as ten epochs.
func BenchmarkChecker_Restarts(b *testing.B) {
	records, restarts := crashing(1000, 100, 80)
	c := history.Checker{Restarts: restarts}
	for b.Loop() {
		if _, err := c.Check(records); err != nil {
			b.Fatal(err)
		}
	}
}
