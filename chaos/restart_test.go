package chaos

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
)

// fencesGoBack returns, per resource, the tokens first used after a
// restart that are not above every token used before it: a lock whose
// fence counter went back with the lost writes and handed out a fence
// again. The lock seeds a fence from the server's clock (µs) when that is
// ahead of its counter, so a counter that lost a second's bumps restarts
// above every fence it gave. A token used after the restart and before it
// is an old holder's, not a new fence, and is left out.
func fencesGoBack(records []history.Record, restarts []history.Restart) []string {
	var bad []string
	for _, rs := range restarts {
		down, at, up := rs.Down, rs.Down.UnixNano(), max(rs.Up.UnixNano(), rs.Down.UnixNano())
		before, after := map[string]int64{}, map[string][]int64{}
		seen := map[string]map[int64]bool{}
		for _, rec := range records {
			if seen[rec.Resource] == nil {
				seen[rec.Resource] = map[int64]bool{}
			}
			if rec.Start < at {
				before[rec.Resource] = max(before[rec.Resource], rec.Token)
				seen[rec.Resource][rec.Token] = true
			}
		}
		for _, rec := range records {
			if rec.Start > up && !seen[rec.Resource][rec.Token] {
				after[rec.Resource] = append(after[rec.Resource], rec.Token)
			}
		}
		for res, tokens := range after {
			if low := slices.Min(tokens); low <= before[res] {
				bad = append(bad, fmt.Sprintf("%s: fence %d after the restart at %s, %d before it", res, low, down.Format("15:04:05.000"), before[res]))
			}
		}
	}
	slices.Sort(bad)
	return bad
}

func TestFencesGoBack(t *testing.T) {
	t.Parallel()
	down := time.Unix(100, 0)
	rec := func(res string, token int64, sec int64) history.Record {
		return history.Record{Resource: res, Token: token, Start: time.Unix(sec, 0).UnixNano()}
	}
	records := []history.Record{
		rec("order:a", 500, 90), rec("order:a", 500, 110), // an old holder after the restart
		rec("order:a", 900, 120),                          // a new fence, above
		rec("order:b", 700, 95), rec("order:b", 650, 105), // a new fence, below: handed out again
		rec("order:c", 10, 130), // nothing before
	}
	require.Equal(t, []string{"order:b: fence 650 after the restart at " + down.Format("15:04:05.000") + ", 700 before it"},
		fencesGoBack(records, []history.Restart{{Down: down, Up: down.Add(time.Second)}}))
	require.Empty(t, fencesGoBack(records, nil))
}
