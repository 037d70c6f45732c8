package history_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A holder with token 900 reads an order; Redis restarts without
// persistence, losing the fence record; an older holder, token 800,
// then reads it too, and the store accepts: no defect, since the commit
// checks that what was read still stands. Checked as one epoch, the
// history is a violation; given the restart, it is linearizable.
func ExampleChecker() {
	start := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	read := func(op uint64, token int64, from, to time.Duration) history.Record {
		return history.Record{
			PID: 1, Op: op, Resource: "order/o-1", Token: token, Kind: history.KindRead,
			Outcome: ledger.OutcomeAccepted, Start: start.Add(from).UnixNano(), End: start.Add(to).UnixNano(),
		}
	}
	records := []history.Record{
		read(1, 900, 0, time.Millisecond),
		read(2, 800, 100*time.Millisecond, 101*time.Millisecond),
	}
	down := start.Add(50 * time.Millisecond) // taken before the kill
	up := start.Add(60 * time.Millisecond)   // taken once the new server is up

	res, err := history.Check(records)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("without the restart:", res.OK())
	_ = os.RemoveAll(filepath.Dir(res.Violations()[0].Visualization))

	res, err = history.Checker{Restarts: []history.Restart{{Down: down, Up: up}}}.Check(records)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("with it:", res.OK())
	fmt.Println(res)
	// Output:
	// without the restart: false
	// with it: true
	// 1 resources, 2 ops (2 accepted, 0 refused, 0 aborted, 0 unknown) in 2 epochs: linearizable
}
