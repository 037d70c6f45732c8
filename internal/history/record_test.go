package history_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// Children: the tests re-execute this test binary, which TestMain sends
// to the child's side when one of these variables is set.
const (
	recordChildEnv   = "TURNSTILE_HISTORY_RECORD_CHILD"   // a history file path
	workloadChildEnv = "TURNSTILE_HISTORY_WORKLOAD_CHILD" // a Redis address
)

func TestMain(m *testing.M) {
	if path := os.Getenv(recordChildEnv); path != "" {
		os.Exit(recordChild(path))
	}
	if addr := os.Getenv(workloadChildEnv); addr != "" {
		os.Exit(workloadChild(addr))
	}
	goleak.VerifyTestMain(m)
}

// accessPair is what a Store tells a History of one commit with two
// fences: pending, then done.
func accessPair(op uint64, token int64) (pendingAccesses, done []ledger.Access) {
	start := time.Now()
	for _, f := range []ledger.Fence{{Resource: "order/o-1", Token: token}, {Resource: "ticket_type/gold/inventory", Token: token + 1}} {
		a := ledger.Access{Fence: f, Op: op, Commit: true, Outcome: ledger.OutcomePending, Start: start}
		pendingAccesses = append(pendingAccesses, a)
		a.Outcome, a.End = ledger.OutcomeAccepted, start.Add(time.Millisecond)
		done = append(done, a)
	}
	return pendingAccesses, done
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "history.jsonl")
	r, err := history.Create(path)
	require.NoError(t, err)
	var mem history.Memory
	p, d := accessPair(7, 7)
	for _, h := range []ledger.History{r, &mem} {
		h.Record(p)
		h.Record(d)
	}
	require.NoError(t, r.Close())
	got, err := history.ReadFiles(path)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Equal(t, mem.Records(), got)
	want := history.Record{
		PID: os.Getpid(), Op: 7, Resource: "ticket_type/gold/inventory", Token: 8, Kind: history.KindCommit,
		Outcome: ledger.OutcomeAccepted, Start: d[1].Start.UnixNano(), End: d[1].End.UnixNano(),
	}
	require.Equal(t, want, got[3])
	require.Equal(t, ledger.OutcomePending, got[0].Outcome)
	require.Zero(t, got[0].End)

	// After Close, a record fails, and says so.
	r.Record(d)
	require.Error(t, r.Err())
}

func TestRead(t *testing.T) {
	t.Parallel()
	line := `{"pid":1,"op":1,"resource":"r","token":1,"kind":"read","outcome":"accepted","start":1,"end":2}`
	got, err := history.Read(strings.NewReader(line + "\n" + line + "\n" + line[:20]))
	require.NoError(t, err)
	require.Len(t, got, 2, "the cut last line is left out")

	_, err = history.Read(strings.NewReader(line + "\n{\"pid\":\n" + line + "\n"))
	require.ErrorContains(t, err, "line 2")
}

// TestRecorder_SIGKILL kills three processes that append to one history
// file, each as fast as it can, and finds every operation each reported
// done in the file, whole: one unbuffered write(2) per record leaves a
// killed process nothing to lose, and O_APPEND keeps the processes' lines
// apart.
func TestRecorder_SIGKILL(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "history.jsonl")
	const procs, atLeast = 3, 300
	type child struct {
		cmd  *exec.Cmd
		last uint64 // the last op it reported recorded
		done chan struct{}
	}
	children := make([]*child, procs)
	reached := make(chan struct{}, procs)
	for i := range children {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$") //nolint:gosec // the test binary itself, re-run as a child
		cmd.Env = append(os.Environ(), recordChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		c := &child{cmd: cmd, done: make(chan struct{})}
		children[i] = c
		go func() {
			defer close(c.done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				n, err := strconv.ParseUint(sc.Text(), 10, 64)
				if err != nil {
					continue
				}
				c.last = n
				if n == atLeast {
					reached <- struct{}{}
				}
			}
		}()
	}
	for range procs {
		select {
		case <-reached:
		case <-time.After(30 * time.Second):
			t.Fatal("the children did not record in time")
		}
	}
	for _, c := range children {
		require.NoError(t, c.cmd.Process.Kill()) // SIGKILL, mid-record as likely as not
	}
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Go(func() {
			<-c.done         // the pipe drained: last is the last op reported
			_ = c.cmd.Wait() // killed: the error says so
		})
	}
	wg.Wait()

	records, err := history.ReadFiles(path)
	require.NoError(t, err, "every complete line parses")
	type key struct {
		pid int
		op  uint64
	}
	lines := map[key]int{}
	for _, r := range records {
		lines[key{r.PID, r.Op}]++
	}
	for i, c := range children {
		require.GreaterOrEqual(t, c.last, uint64(atLeast))
		for op := uint64(1); op <= c.last; op++ {
			require.Equal(t, 4, lines[key{c.cmd.Process.Pid, op}], "child %d op %d: pending and done, two fences each", i, op)
		}
		// What it recorded after its last report is whole too: a
		// write either happened or did not.
		require.Contains(t, []int{0, 2, 4}, lines[key{c.cmd.Process.Pid, c.last + 1}])
	}
	t.Logf("%d records from %d killed processes", len(records), procs)
}

// recordChild is a process of TestRecorder_SIGKILL: record operations
// until killed, reporting each on stdout once it is recorded.
func recordChild(path string) int {
	r, err := history.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	token := int64(0)
	for op := uint64(1); ; op++ {
		token++
		p, d := accessPair(op, token)
		r.Record(p)
		r.Record(d)
		if err := r.Err(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(op) // os.Stdout is unbuffered: reported means recorded
	}
}

// BenchmarkRecorder_Record is what a fenced operation of one fence costs
// its caller in recording: the pending and the done record, two writes.
func BenchmarkRecorder_Record(b *testing.B) {
	r, err := history.Create(filepath.Join(b.TempDir(), "history.jsonl"))
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, r.Close()) })
	p, d := accessPair(1, 1)
	p, d = p[:1], d[:1]
	for b.Loop() {
		r.Record(p)
		r.Record(d)
	}
}
