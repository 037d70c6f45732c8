package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/hibiken/asynq"
)

// archivedReason is why some of a run's tasks were archived: most often a
// rule of the shop refusing a request (a refund beyond what was paid, a
// payment for an order already revoked), which the summary must not let
// read as a failure.
type archivedReason struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// archivedReasons reads the run's archived tasks (asynq keeps each one's
// last error) and counts them by task type and normalized reason, most
// frequent first. A queue it cannot read shows as a reason of its own.
func (l *demoLoad) archivedReasons(ctx context.Context) []archivedReason {
	counts := map[archivedReason]int{}
	for _, q := range demoQueues {
		tasks, err := l.runTasks(ctx, q, (*asynq.Inspector).ListArchivedTasks)
		if err != nil {
			counts[archivedReason{Type: "queue " + q, Reason: "cannot list its archived tasks: " + err.Error()}]++
		}
		for _, t := range tasks {
			counts[archivedReason{Type: t.Type, Reason: normalizeReason(t.Type, t.LastErr)}]++
		}
	}
	rs := make([]archivedReason, 0, len(counts))
	for r, n := range counts {
		r.Count = n
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b archivedReason) int {
		return cmp.Or(b.Count-a.Count, cmp.Compare(a.Type, b.Type), cmp.Compare(a.Reason, b.Reason))
	})
	return rs
}

// quantity is a number, possibly with a unit ("6500", "35s", "1.5ms").
var quantity = regexp.MustCompile(`^[0-9][0-9.]*[a-zµ]{0,2}$`)

// normalizeReason makes one reason of the last errors of tasks archived
// for the same rule: it drops the task type the error starts with and
// asynq's "skip retry" it ends with, and stands <n> for each number and
// <id> for each other word with a digit in it (order, webhook and refund
// IDs).
func normalizeReason(kind, lastErr string) string {
	r := strings.TrimSuffix(lastErr, ": "+asynq.SkipRetry.Error())
	r = strings.TrimPrefix(r, kind+": ")
	words := strings.Fields(r)
	for i, w := range words {
		core := strings.TrimRight(w, ":,;.)")
		rest := w[len(core):]
		switch {
		case quantity.MatchString(core):
			words[i] = "<n>" + rest
		case strings.ContainsAny(core, "0123456789"):
			words[i] = "<id>" + rest
		}
	}
	if len(words) == 0 {
		return "(no error recorded)"
	}
	return strings.Join(words, " ")
}

// printArchived lists the reasons, if any task was archived.
func printArchived(w io.Writer, rs []archivedReason) {
	if len(rs) == 0 {
		return
	}
	n := 0
	for _, r := range rs {
		n += r.Count
	}
	fmt.Fprintf(w, "\n%d tasks archived, not retried; by reason (mostly the shop's rules refusing a request):\n", n)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rs {
		fmt.Fprintf(tw, "  %d\t%s\t%s\n", r.Count, r.Type, r.Reason)
	}
	_ = tw.Flush()
}
