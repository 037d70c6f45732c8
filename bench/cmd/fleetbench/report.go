package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
)

// ceiling is what one configuration's per-task CPU costs say about a
// larger machine.
type ceiling struct {
	Backend string `json:"backend"`
	Pattern string `json:"pattern"`
	// PerWorkerCore is the tasks/s one core of worker CPU sustains.
	PerWorkerCore float64 `json:"tasks_per_s_per_worker_core"`
	// BusiestNode is the tasks/s at which the Redis node with the most
	// CPU per task has a core (its one command thread) busy.
	BusiestNode float64 `json:"tasks_per_s_busiest_redis_node"`
	// Here is the tasks/s the machine's cores sustain, workers and Redis
	// sharing them.
	Here float64 `json:"tasks_per_s_here"`
}

// smallest returns the run of r's backend and pattern with the fewest
// workers.
func smallest(runs []result, r result) result {
	base := r
	for _, o := range runs {
		if o.Backend == r.Backend && o.Pattern == r.Pattern && o.Workers < base.Workers {
			base = o
		}
	}
	return base
}

// efficiencies sets each run's efficiency against the smallest fleet of
// its backend and pattern: tasks/s(N) / (N/N0 * tasks/s(N0)).
func efficiencies(runs []result) {
	for i := range runs {
		if base := smallest(runs, runs[i]); base.TasksPerS > 0 {
			runs[i].Efficiency = runs[i].TasksPerS / (float64(runs[i].Workers) / float64(base.Workers) * base.TasksPerS)
		}
	}
}

// ceilings reads the per-task costs of each backend and pattern's
// smallest fleet.
func ceilings(runs []result, cores int) []ceiling {
	var out []ceiling
	for _, r := range runs {
		if smallest(runs, r).Workers != r.Workers || r.WorkerCPUms <= 0 || r.RedisCPUms <= 0 {
			continue // not the smallest fleet, or no CPU measured
		}
		out = append(out, ceiling{
			Backend: r.Backend, Pattern: r.Pattern,
			PerWorkerCore: 1000 / r.WorkerCPUms,
			BusiestNode:   1000 / slices.Max(r.RedisCPUmsByNode),
			Here:          1000 * float64(cores) / (r.WorkerCPUms + r.RedisCPUms),
		})
	}
	return out
}

// report prints the tables and, with -json, every figure as one JSON
// object on the last line.
func (b *bench) report(w io.Writer) error {
	efficiencies(b.runs)
	cores := runtime.NumCPU()
	ceils := ceilings(b.runs, cores)
	fmt.Fprint(w, runsTable(b.runs, b.cfg))
	if len(ceils) > 0 {
		fmt.Fprintf(w, "\nWhat the per-task CPU costs of one worker say about larger machines (this one has %d cores):\n\n", cores)
		fmt.Fprint(w, "| backend | keys | tasks/s per worker core | tasks/s at which the busiest Redis node's thread is saturated | tasks/s this machine's cores allow |\n|---|---|---|---|---|\n")
		for _, c := range ceils {
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f |\n", c.Backend, c.Pattern, c.PerWorkerCore, c.BusiestNode, c.Here)
		}
		fmt.Fprint(w, "\nWith C cores for workers and Redis on cores of its own, distinct keys should reach about\n"+
			"min(C x tasks/s per worker core, the busiest node's ceiling x its share of the nodes); hot keys are bound\n"+
			"by their orders' locks, each held across the gateway's latency, whatever the cores.\n")
	}
	if b.mem != nil {
		fmt.Fprint(w, "\n"+memoryTable(*b.mem))
	}
	if !b.cfg.json {
		return nil
	}
	body, err := json.Marshal(map[string]any{"cores": cores, "runs": b.runs, "ceilings": ceils, "memory": b.mem})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(body))
	return err
}

func runsTable(runs []result, cfg config) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Backlogs of %d tasks (distinct keys) or %d (hot keys, %d orders), medians of %d rounds; "+
		"latency from enqueue to commit at %.0f %% of that rate; CPU per task from /proc (workers) and INFO cpu (Redis);\n"+
		"others: what other processes on this machine took meanwhile (/proc/stat).\n\n",
		cfg.tasks, cfg.hotTasks, cfg.hotOrders, cfg.rounds, 100*cfg.latencyLoad)
	sb.WriteString("| backend | keys | workers | tasks/s | efficiency | p50 / p99 ms (at tasks/s) | worker CPU ms/task | Redis CPU ms/task (per node) | cores busy: workers + Redis + others |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		nodes := make([]string, len(r.RedisCPUmsByNode))
		for i, v := range r.RedisCPUmsByNode {
			nodes[i] = fmt.Sprintf("%.3f", v)
		}
		perNode := ""
		if len(nodes) > 1 {
			perNode = " (" + strings.Join(nodes, " / ") + ")"
		}
		fmt.Fprintf(&sb, "| %s | %s | %d | %.0f | %.2f | %.1f / %.1f (%.0f) | %.3f | %.3f%s | %.2f + %.2f + %.2f |\n",
			r.Backend, r.Pattern, r.Workers, r.TasksPerS, r.Efficiency, r.P50ms, r.P99ms, r.LatencyRate,
			r.WorkerCPUms, r.RedisCPUms, perNode, r.WorkerCores, r.RedisCores, r.OtherCores)
	}
	return sb.String()
}

func memoryTable(m memory) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Memory after %d orders (%d paid, the rest revoked), every job done, %s, %d workers (%.0f s); invariants OK: %t\n\n",
		m.Orders, m.Paid, m.Backend, m.Workers, m.Seconds, m.InvariantsOK)
	sb.WriteString("| node | keys | used_memory MB | keys added per order | bytes added per order |\n|---|---|---|---|---|\n")
	for i, a := range m.After {
		b := m.Before[i]
		fmt.Fprintf(&sb, "| %s | %d | %.1f | %.2f | %.0f |\n", a.Addr, a.Keys, float64(a.Bytes)/(1<<20),
			float64(a.Keys-b.Keys)/float64(m.Orders), float64(a.Bytes-b.Bytes)/float64(m.Orders))
	}
	fmt.Fprintf(&sb, "| all | | | %.2f | %.0f |\n", m.KeysPerOrder, m.BytesPerOrder)
	kinds := slices.SortedFunc(maps.Keys(m.KeyKinds), func(a, b string) int {
		return cmp.Or(cmp.Compare(m.KeyKinds[b], m.KeyKinds[a]), strings.Compare(a, b))
	})
	sb.WriteString("\n| keys, by kind | count | per order |\n|---|---|---|\n")
	for _, k := range kinds {
		if n := m.KeyKinds[k]; float64(n) >= 0.01*float64(m.Orders) {
			fmt.Fprintf(&sb, "| `%s` | %d | %.2f |\n", k, n, float64(n)/float64(m.Orders))
		}
	}
	return sb.String()
}
