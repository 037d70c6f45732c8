package chaos

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// overlapMargin is how much earlier than its lock's TTL a refusal must
// come to count as an overlap: a fence is the Redis clock in µs when the
// lock was set (lock's bump: max(counter, TIME)), recorded against the
// same machine's clock, so the margin only absorbs a counter running a
// few µs ahead of the clock and the rounding of the two clocks' readings.
const overlapMargin = 250 * time.Millisecond

// overlaps are the refused fenced operations whose lock cannot yet have
// run out when the ledger refused them. A refusal means a holder with a
// higher fence had already used the resource, so it took the lock after
// this one's; with compare-and-delete, the lock set at the fence's moment
// with PX ttl (extensions only lengthen it) could only have gone by
// running out, ttl later. A refusal before that is two holders at once:
// someone deleted or overwrote a lock they did not hold. The fences keep
// the books right even then, so the other checks pass; this one does not.
// ttl is the locks' shortest TTL (shopLockTTL: the order and inventory
// locks both have it).
//
// A Redis restart that lost the lock between its setting and the refusal
// hands it on early, by design (the fence is what guards then), so those
// refusals are left out.
func overlaps(records []history.Record, ttl time.Duration, restarts []history.Restart) []history.Record {
	var out []history.Record
	for _, r := range records {
		if r.Outcome != ledger.OutcomeRefused {
			continue
		}
		set, refused := time.UnixMicro(r.Token), time.Unix(0, r.End)
		if slices.ContainsFunc(restarts, func(rs history.Restart) bool { return !rs.Down.Before(set) && rs.Down.Before(refused) }) {
			continue
		}
		if refused.Before(set.Add(ttl - overlapMargin)) {
			out = append(out, r)
		}
	}
	return out
}

// describeOverlaps names the first n overlaps: resource, process, how long
// after its lock was set the refusal came.
func describeOverlaps(rs []history.Record, n int) string {
	var parts []string
	for _, r := range rs[:min(n, len(rs))] {
		parts = append(parts, fmt.Sprintf("%s %s by pid %d, fence %d, refused %s after its lock was set",
			r.Kind, r.Resource, r.PID, r.Token, time.Unix(0, r.End).Sub(time.UnixMicro(r.Token)).Round(time.Millisecond)))
	}
	if len(rs) > n {
		parts = append(parts, fmt.Sprintf("and %d more", len(rs)-n))
	}
	return strings.Join(parts, "; ")
}

// A mutant is the turnstile tree with a seeded defect, the scenarios
// that strike it, and the check that must catch it.
type mutant struct {
	name  string
	edits []edit
	// scenarios names the scenarios to run (make chaos's set when long);
	// empty: CI's whole set, all at once.
	scenarios []string
	long      bool   // three seeds per scenario, as make chaos runs
	catches   string // a check constant (checkExclusive, ...)
}

// An edit replaces old, which must occur exactly once, in file (relative
// to the module root).
type edit struct{ file, old, new string }

// noChangeCheck switches off the commit's check of what it was computed
// from (ledger.ErrChanged), both halves: the counts and the order.
var noChangeCheck = []edit{
	{"jobs/ledger/store.go", "  if was ~= '' and redis.call(", "  if false and redis.call("},
	{"jobs/ledger/store.go", "if ARGV[o + 5] ~= '' then\n", "if false then -- mutant\n"},
}

// mutants are the defects the issue asks the suite to catch.
var mutants = []mutant{
	{
		// The release script deletes the lock whoever holds it: a plain
		// DEL, as naive locks release. Two paths release a lock the caller
		// may not hold: a wait that gives up (the guard's budget is 1 s)
		// releases every key it asked for, and a holder whose lease ran
		// out (a pause, a black hole) releases when its handler returns.
		// Either deletes the current holder's lock, and the next taker
		// overlaps with it. Latency alone does not do it here (the leases
		// refresh, and the refund pairs that race rarely meet a holder
		// slower than the 1 s budget): runs with 3, 4 and 8 latency faults
		// of 100-400 ms, of 1-1.5 s, and on every worker at once all
		// passed. The whole CI set at once on two cores, where holders
		// are slow, fails the exclusive check.
		name:    "ReleaseWithoutCompare",
		edits:   []edit{{"lock/scripts.go", "  if redis.call('GET', lk) == ARGV[1] then\n", "  if true then -- mutant: release is a plain DEL\n"}},
		catches: checkExclusive,
	},
	{
		// The ledger takes any fence, the guard lets a handler whose lease
		// ran out go on, and the commit does not check what it read: a
		// worker paused between its read and its commit wakes after
		// another took the order and commits on top. Each of the three
		// alone still refuses that commit.
		name: "NoFencing",
		edits: append([]edit{
			{"jobs/ledger/store.go", "  if tonumber(ARGV[2 + i]) < last then\n    return redis.error_reply('STALE ' .. i)\n", "  if false then -- mutant\n    return redis.error_reply('STALE ' .. i)\n"},
			{"middleware/guard.go", "\t\t\tcancel(fmt.Errorf(\"%s: %w\", t.Type(), ErrLeaseLost))\n", "\t\t\t_ = ErrLeaseLost // mutant: the handler goes on\n"},
		}, noChangeCheck...),
		scenarios: []string{"Pause"},
		long:      true,
		catches:   checkLinearizable,
	},
	{
		// The commit does not check what it read: a crash that loses the
		// last second loses a holder's fenced read with it, its fences
		// still pass, and its commit lands on a state it was not computed
		// from (before the check, 2 runs in 4 oversold or mismatched).
		name:      "NoChangeCheck",
		edits:     noChangeCheck,
		scenarios: []string{"Crash"},
		long:      true,
		catches:   checkInvariants,
	},
}

// TestChaosMutants shows that the suite catches each mutant: it builds the
// turnstile binary from a copy of the tree with the mutant's edits, runs
// the mutant's scenarios with it (CI's, all at once as TestChaos does,
// unless it names some), and expects at least one run to fail the
// mutant's check. It builds a binary per mutant and runs for minutes, so
// it runs only with CHAOS_MUTANTS=true (CHAOS_SEED repeats a seed; -run
// 'TestChaosMutants/NoFencing' picks one).
func TestChaosMutants(t *testing.T) {
	if !envBool("CHAOS_MUTANTS") {
		t.Skip("mutants: a build and a run each; run with CHAOS_MUTANTS=true")
	}
	seed := envSeed(t)
	t.Logf("mutants: seed %d", seed)
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			bin := buildMutant(t, m)
			scs := scenarios(m.long)
			if len(m.scenarios) > 0 {
				scs = slices.DeleteFunc(scs, func(sc scenario) bool { return !slices.Contains(m.scenarios, sc.name) })
				require.Len(t, scs, len(m.scenarios), "mutant %s: scenarios %v", m.name, m.scenarios)
			}
			results := runAll(t, scs, seed, m.long, fleetOptions{proxied: true, bin: bin}, false)
			t.Log("\n" + table(results))
			var caught []string
			for _, r := range results {
				if slices.ContainsFunc(r.checks, func(f failure) bool { return f.check == m.catches }) {
					caught = append(caught, r.scenario)
				}
			}
			require.NotEmpty(t, caught, "seed %d: mutant %s passed the %s check in every scenario", seed, m.name, m.catches)
			t.Logf("seed %d: mutant %s failed the %s check in %v", seed, m.name, m.catches, caught)
		})
	}
}

// buildMutant copies the module's files (tracked and untracked, not
// ignored: what git ls-files lists) to a temp dir, applies m's edits, and builds
// cmd/turnstile there.
func buildMutant(t *testing.T, m mutant) string {
	t.Helper()
	root, dir := "..", t.TempDir()
	ls := exec.CommandContext(t.Context(), "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = root
	out, err := ls.Output()
	require.NoError(t, err, "git ls-files")
	applied := 0
	for name := range bytes.SplitSeq(bytes.TrimRight(out, "\x00"), []byte{0}) {
		src := filepath.Join(root, string(name))
		b, err := os.ReadFile(src) //nolint:gosec // G304: the module's own files
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet in the index
		}
		require.NoError(t, err)
		dst := filepath.Join(dir, string(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o750))
		for _, e := range m.edits {
			if string(name) == e.file {
				require.Equal(t, 1, bytes.Count(b, []byte(e.old)), "mutant %s: %q must occur once in %s", m.name, e.old, e.file)
				b = bytes.Replace(b, []byte(e.old), []byte(e.new), 1)
				applied++
			}
		}
		require.NoError(t, os.WriteFile(dst, b, 0o600)) //nolint:gosec // G703: names git lists, under our temp dir
	}
	require.Equal(t, len(m.edits), applied, "mutant %s: every edit's file must be in the tree", m.name)
	bin := filepath.Join(dir, "turnstile-"+m.name)
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/turnstile") //nolint:gosec // G204: our temp dir
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("mutant %s: go build: %v\n%s", m.name, err, out)
	}
	return bin
}

// TestOverlaps: a refusal within its lock's TTL is an overlap, one after
// it, one across a restart of Redis, or an accepted operation is not. It
// needs no Redis: the fence is the time its lock was set.
func TestOverlaps(t *testing.T) {
	t.Parallel()
	set := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	op := func(outcome ledger.Outcome, after time.Duration) history.Record {
		end := set.Add(after)
		return history.Record{Resource: "order:o-1", Token: set.UnixMicro(), Kind: history.KindCommit, Outcome: outcome, Start: end.Add(-time.Millisecond).UnixNano(), End: end.UnixNano()}
	}
	early := op(ledger.OutcomeRefused, time.Second)
	got := overlaps([]history.Record{
		early,
		op(ledger.OutcomeRefused, 5*time.Second), // the lock may have run out
		op(ledger.OutcomeRefused, 5*time.Second-overlapMargin), // within the margin
		op(ledger.OutcomeAccepted, time.Second),
		op(ledger.OutcomePending, time.Second),
	}, 5*time.Second, nil)
	require.Equal(t, []history.Record{early}, got)

	// A restart between the lock's setting and the refusal lost the lock:
	// not an overlap. One before the setting or after the refusal is.
	restart := func(after time.Duration) []history.Restart {
		return []history.Restart{{Down: set.Add(after), Up: set.Add(after + 100*time.Millisecond)}}
	}
	const ttl = 3 * time.Second
	require.Empty(t, overlaps([]history.Record{early}, ttl, restart(500*time.Millisecond)))
	require.Equal(t, []history.Record{early}, overlaps([]history.Record{early}, ttl, restart(-time.Second)))
	require.Equal(t, []history.Record{early}, overlaps([]history.Record{early}, ttl, restart(2*time.Second)))
}
