package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// commandCalls reads how many times redis-server ran each command since it
// started (INFO commandstats), with its reads and writes of client sockets
// (INFO stats) under the names "(reads)" and "(writes)". It tells which
// Redis work a mode adds per task, where CPU figures alone cannot: two
// modes sending the same commands differ only in the worker.
func commandCalls(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats", "stats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return parseCommandCalls(info), nil
}

// parseCommandCalls reads lines such as
// "cmdstat_evalsha:calls=20015,usec=550110,usec_per_call=27.49,..." and
// "total_reads_processed:15290".
func parseCommandCalls(info string) map[string]int64 {
	out := map[string]int64{}
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		for field, name := range map[string]string{"total_reads_processed:": "(reads)", "total_writes_processed:": "(writes)"} {
			if v, ok := strings.CutPrefix(line, field); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[name] = n
				}
			}
		}
		name, stats, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		for kv := range strings.SplitSeq(stats, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[name] = n
				}
			}
		}
	}
	return out
}

// perTask formats what ran between two commandCalls readings, per task,
// most frequent first, leaving out what ran at most once per 100 tasks
// (polls, the readings' own INFO).
func perTask(before, after map[string]int64, tasks int) string {
	type row struct {
		name string
		per  float64
	}
	var rows []row
	var total float64
	for _, name := range slices.Sorted(maps.Keys(after)) {
		d := after[name] - before[name]
		if d*100 <= int64(tasks) {
			continue
		}
		per := float64(d) / float64(tasks)
		if !strings.HasPrefix(name, "(") {
			total += per
		}
		rows = append(rows, row{name, per})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(b.per, a.per) })
	parts := []string{fmt.Sprintf("%.2f commands", total)}
	for _, r := range rows {
		parts = append(parts, fmt.Sprintf("%s %.2f", r.name, r.per))
	}
	return strings.Join(parts, ", ")
}
