// Package history records the ledger's fenced reads and commits to a file,
// from any number of processes, and checks with porcupine that each
// resource's history is linearizable against a fenced register: an
// operation whose token is at least the highest the store has taken is
// accepted and becomes the highest; a lower one is refused and changes
// nothing. A store whose fence check is broken, or a lock that hands out a
// token twice or backwards, shows as a violation on the resource.
//
//	rec, err := history.Create(path) // in each worker
//	store := ledger.New(rdb, "").WithHistory(rec)
//	...
//	records, err := history.ReadFiles(path) // after the run
//	res, err := history.Check(records)
//	if !res.OK() { log(res) } // names the resources, and an HTML file per violation
//
// A run in which Redis restarted and may have lost acknowledged writes
// (no persistence, appendfsync everysec, a failover) is checked with a
// Checker given the restarts: each resource is checked epoch by epoch,
// each epoch after a restart from an unknown state.
//
//	res, err := history.Checker{Restarts: restarts}.Check(records)
package history

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A Kind says whether an operation was a fenced read or a commit.
type Kind string

// The kinds of fenced operations.
const (
	KindRead   Kind = "read"
	KindCommit Kind = "commit"
)

// A Record is one fence of one fenced operation, as a line of a history
// file. An operation is recorded twice: pending before its script is sent,
// and with its outcome once it returns.
type Record struct {
	PID      int            `json:"pid"`
	Op       uint64         `json:"op"` // numbers the operation within its process
	Resource string         `json:"resource"`
	Token    int64          `json:"token"`
	Kind     Kind           `json:"kind"`
	Outcome  ledger.Outcome `json:"outcome"`
	// Start and End are Unix nanoseconds of the recording process's wall
	// clock, shared by the processes of one machine; End is 0 while
	// pending.
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// A Recorder appends records to a file, one write(2) per call to Record
// (an operation pending, then done) and no buffer, so that a process killed with SIGKILL loses nothing it recorded,
// and several processes can append to one file (O_APPEND). It implements
// ledger.History and is safe for concurrent use.
type Recorder struct {
	f   *os.File
	pid int

	mu  sync.Mutex
	err error // the first failed write
}

var _ ledger.History = (*Recorder)(nil)

// Create opens path for appending, creating it if needed.
func Create(path string) (*Recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600) //nolint:gosec // G304: the path is the operator's, by design
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return &Recorder{f: f, pid: os.Getpid()}, nil
}

// Record appends one line per access, all in one write. A failed write is
// kept for Err and Close: the ledger cannot act on it, and a history with
// a gap must not pass for a whole one.
func (r *Recorder) Record(accesses []ledger.Access) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // one line per value
	for _, a := range accesses {
		if err := enc.Encode(newRecord(r.pid, a)); err != nil {
			r.fail(err)
			return
		}
	}
	if _, err := r.f.Write(buf.Bytes()); err != nil {
		r.fail(err)
	}
}

func (r *Recorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = fmt.Errorf("history: record: %w", err)
	}
}

// Err returns the first record that failed, if any.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close closes the file and returns the first error of the recorder's
// life: a failed record, or the close's own.
func (r *Recorder) Close() error {
	return errors.Join(r.Err(), r.f.Close())
}

// Read returns the records of a history file. A last line without its
// newline, cut short by a kill or a full disk, is left out; any other line
// that does not parse is an error.
func Read(r io.Reader) ([]Record, error) {
	br := bufio.NewReader(r)
	var out []Record
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return out, nil // a partial line, or none
		}
		if err != nil {
			return nil, fmt.Errorf("history: read: %w", err)
		}
		var rec Record
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("history: line %d: %w", n, err)
		}
		out = append(out, rec)
	}
}

// ReadFiles returns the records of every file, in order.
func ReadFiles(paths ...string) ([]Record, error) {
	var out []Record
	for _, p := range paths {
		f, err := os.Open(p) //nolint:gosec // G304: reading the caller's history files is the point
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		recs, err := Read(f)
		_ = f.Close() // read-only: nothing to lose
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// newRecord is the record of a by process pid.
func newRecord(pid int, a ledger.Access) Record {
	rec := Record{
		PID: pid, Op: a.Op, Resource: a.Resource, Token: a.Token, Kind: KindRead,
		Outcome: a.Outcome, Start: a.Start.UnixNano(),
	}
	if a.Commit {
		rec.Kind = KindCommit
	}
	if !a.End.IsZero() {
		rec.End = a.End.UnixNano()
	}
	return rec
}

// Memory keeps a history in memory, for one process's tests. It implements
// ledger.History and is safe for concurrent use. The zero value is ready.
type Memory struct {
	mu      sync.Mutex
	records []Record
}

var _ ledger.History = (*Memory)(nil)

// Record appends the accesses.
func (m *Memory) Record(accesses []ledger.Access) {
	pid := os.Getpid()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range accesses {
		m.records = append(m.records, newRecord(pid, a))
	}
}

// Records returns a copy of what was recorded so far.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.records)
}
