package ledger

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// An Outcome is what a fenced read or commit did with one of its fences.
type Outcome string

// The outcomes of a fence in a fenced read or commit.
const (
	// OutcomePending: the script is about to be sent. A History hears of
	// every operation twice, pending and then done, so that one whose
	// process died in between still shows it may have run.
	OutcomePending Outcome = "pending"
	// OutcomeAccepted: the store took the token; it is now the highest
	// it has seen for the resource (or equal to it).
	OutcomeAccepted Outcome = "accepted"
	// OutcomeRefused: the token was lower than the highest the store had
	// seen for the resource (ErrStaleFence); nothing was written.
	OutcomeRefused Outcome = "refused"
	// OutcomeAborted: another fence of the same operation was refused, or
	// the commit found what it was computed from changed (ErrChanged), so
	// nothing was written or recorded for this one, whatever its token.
	OutcomeAborted Outcome = "aborted"
	// OutcomeUnknown: Redis gave no answer (a network error, a timeout, a
	// cancelled context), so the operation may or may not have run.
	OutcomeUnknown Outcome = "unknown"
)

// An Access is one fence of one fenced read or commit, as a History is
// told of it.
type Access struct {
	Fence
	// Op numbers the operation within the process: the pending and the
	// done Access of a fence share it, and so do an operation's fences.
	Op uint64
	// Commit is true for a Commit, false for a fenced read.
	Commit  bool
	Outcome Outcome
	// Start is taken before the script is sent, End (zero while pending)
	// after its reply came back or the call failed: the operation took
	// effect, if it did, in between. Both are the caller's wall clock,
	// which the processes of one machine share.
	Start, End time.Time
}

// A History is told of every fenced read and commit a Store runs, with one
// Access per fence: with OutcomePending just before the script is sent,
// and with how it came out once it returns. Record is called from the
// Store's callers' goroutines, concurrently; it should be quick, and must
// not keep the slice.
type History interface {
	Record(accesses []Access)
}

// opSeq numbers fenced operations, for Access.Op: one counter for the
// process, so that Stores sharing a History never reuse a number.
var opSeq atomic.Uint64

// WithHistory returns a Store that shares s's Redis and caches and tells h
// of each fenced read and commit (see History). A nil h records nothing.
func (s *Store) WithHistory(h History) *Store {
	c := *s
	c.history = h
	return &c
}

// runFenced runs a fenced script (a read or a commit) and tells s.history
// about it, before and after.
func (s *Store) runFenced(ctx context.Context, commit bool, script *redis.Script, fences []Fence, keys []string, args ...any) *redis.Cmd {
	if m, ok := s.mutants[script]; ok {
		script = m
	}
	if s.history == nil || len(fences) == 0 {
		return script.Run(ctx, s.rdb, keys, args...)
	}
	op, start := opSeq.Add(1), time.Now()
	s.history.Record(accesses(op, commit, fences, start, time.Time{}, nil, true))
	cmd := script.Run(ctx, s.rdb, keys, args...)
	s.history.Record(accesses(op, commit, fences, start, time.Now(), cmd.Err(), false))
	return cmd
}

// accesses says what a fenced script's reply, err, did with each fence,
// or that it is pending.
func accesses(op uint64, commit bool, fences []Fence, start, end time.Time, err error, pending bool) []Access {
	stale, isStale := staleFence(err, fences)
	_, isChanged := changed(err)
	out := make([]Access, len(fences))
	for i, f := range fences {
		a := Access{Fence: f, Op: op, Commit: commit, Start: start, End: end, Outcome: OutcomeAccepted}
		switch {
		case pending:
			a.Outcome = OutcomePending
		case isStale && f == stale:
			a.Outcome = OutcomeRefused
		case isStale || isChanged:
			a.Outcome = OutcomeAborted
		case err != nil && !errors.Is(err, redis.Nil):
			// redis.Nil is a read that found nothing, after the
			// fences took; any other error may have come after the
			// script ran, or before.
			a.Outcome = OutcomeUnknown
		}
		out[i] = a
	}
	return out
}
