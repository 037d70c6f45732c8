package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// figures holds every figure's value per round, by its JSON name, and the
// checks that failed.
type figures map[string][]float64

func (f figures) add(name string, v float64) { f[name] = append(f[name], v) }

// fail records a failed check; the run then exits non-zero.
func (b *bench) fail(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = append(b.failures, msg)
	progress("%s", msg)
}

// get is the median of a figure over the rounds, or for the counts of lost
// updates the largest; ok is false when the figure was not measured.
func (f figures) get(name string) (float64, bool) {
	vs := f[name]
	if len(vs) == 0 {
		return 0, false
	}
	if strings.HasSuffix(name, "_flash_lost") {
		return slices.Max(vs), true
	}
	return median(vs), true
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratios are the targets, as ratios of medians.
func (f figures) ratios() map[string]float64 {
	out := map[string]float64{}
	ratio := func(name string, a, b float64, ok bool) {
		if ok && b != 0 {
			out[name] = a / b
		}
	}
	bestPeer := func(suffix string, better func(a, b float64) bool) (float64, bool) {
		var best float64
		found := false
		for _, m := range []mode{modeRedsync, modeRedislock} {
			if v, ok := f.get(m.String() + suffix); ok && (!found || better(v, best)) {
				best, found = v, true
			}
		}
		return best, found
	}
	higher := func(a, b float64) bool { return a > b }
	lower := func(a, b float64) bool { return a < b }
	both := func(a, b string) (float64, float64, bool) {
		x, ok1 := f.get(a)
		y, ok2 := f.get(b)
		return x, y, ok1 && ok2
	}
	for _, m := range []mode{modeGuard, modeChain} {
		n := m.String()
		if peer, ok := bestPeer("_noop_per_s", higher); ok {
			v, ok := f.get(n + "_noop_per_s")
			ratio(n+"_vs_best_peer_noop", v, peer, ok)
		}
		if peer, ok := bestPeer("_work_per_s", higher); ok {
			v, ok := f.get(n + "_work_per_s")
			ratio(n+"_vs_best_peer_work", v, peer, ok)
		}
		if peer, ok := bestPeer("_flash_sold_per_s", higher); ok {
			v, ok := f.get(n + "_flash_sold_per_s")
			ratio(n+"_vs_best_peer_flash_sold", v, peer, ok)
		}
		if peer, ok := bestPeer("_flash_p99_ms", lower); ok {
			v, ok := f.get(n + "_flash_p99_ms")
			ratio(n+"_vs_best_peer_flash_p99", v, peer, ok)
		}
		// CPU a guard adds per task, worker plus Redis, over bare asynq.
		added := func(mode string) (float64, bool) {
			w, r, ok1 := both(mode+"_noop_worker_cpu_us", mode+"_noop_redis_cpu_us")
			bw, br, ok2 := both("bare_noop_worker_cpu_us", "bare_noop_redis_cpu_us")
			return w + r - bw - br, ok1 && ok2
		}
		mine, ok1 := added(n)
		theirs, ok2 := added(modeRedsync.String())
		ratio(n+"_added_cpu_vs_redsync", mine, theirs, ok1 && ok2)
	}
	a, b, ok := both("chain_noop_per_s", "guard_noop_per_s")
	ratio("chain_vs_guard_noop", a, b, ok)
	a, b, ok = both("parked_many_wake_redis_cpu_us", "parked_few_wake_redis_cpu_us")
	ratio("parked_wake_cpu_many_vs_few", a, b, ok)
	return out
}

// report prints the markdown table, the ratios, any failed check, and
// with -json every figure; it fails the run when a check failed.
func (b *bench) report(w io.Writer) error {
	f := b.fig
	var ms []mode
	for m := range modeNames {
		if slices.Contains(b.cfg.modes, mode(m)) {
			ms = append(ms, mode(m))
		}
	}
	var sb strings.Builder
	sb.WriteString("| scenario |")
	for _, m := range ms {
		fmt.Fprintf(&sb, " %s |", m)
	}
	sb.WriteString("\n|---|" + strings.Repeat("---|", len(ms)) + "\n")
	row := func(label string, cell func(m string) string) {
		cells := make([]string, len(ms))
		seen := false
		for i, m := range ms {
			cells[i] = cell(m.String())
			if cells[i] != "—" {
				seen = true
			}
		}
		if seen {
			fmt.Fprintf(&sb, "| %s | %s |\n", label, strings.Join(cells, " | "))
		}
	}
	num := func(suffix, format string) func(string) string {
		return func(m string) string {
			if v, ok := f.get(m + suffix); ok {
				return fmt.Sprintf(format, v)
			}
			return "—"
		}
	}
	cpu := func(scenario string) func(string) string {
		return func(m string) string {
			w, okw := f.get(m + "_" + scenario + "_worker_cpu_us")
			r, okr := f.get(m + "_" + scenario + "_redis_cpu_us")
			if okw && okr {
				return fmt.Sprintf("%.0f + %.0f", w, r)
			}
			return "—"
		}
	}
	c := b.cfg
	row(fmt.Sprintf("%d no-op tasks, distinct keys: tasks/s", c.tasks), num("_noop_per_s", "%.0f"))
	row("same: worker + Redis CPU µs per task", cpu("noop"))
	row(fmt.Sprintf("%d tasks, distinct keys, %s handler: tasks/s", c.tasks, c.work), num("_work_per_s", "%.0f"))
	row("same: worker + Redis CPU µs per task", cpu("work"))
	row(fmt.Sprintf("%d tasks on one key, %s handler: total vs serial ideal", c.hot, c.hold), num("_hot_vs_ideal", "%.2f"))
	row(fmt.Sprintf("%d tasks on one key, %s handler: total vs serial ideal", c.hotLong, c.holdLong), num("_hotlong_vs_ideal", "%.2f"))
	row(fmt.Sprintf("%d cold tasks beside %d on a hot key (%s each): share of their rate alone", c.tasks, c.hot, c.work), num("_cold_share", "%.2f"))
	row(fmt.Sprintf("flash sale, %d tasks on one resource: sold/s", c.sale), num("_flash_sold_per_s", "%.0f"))
	row("same: p99 server start to done, ms", num("_flash_p99_ms", "%.0f"))
	row("same: lost updates (most in a round)", num("_flash_lost", "%.0f"))
	fmt.Fprint(w, sb.String())

	if v, ok := f.get("parked_many_bytes_per_task"); ok {
		few, _ := f.get("parked_few_bytes_per_task")
		pending, _ := f.get("pending_bytes_per_task")
		inList, _ := f.get("parked_many_in_list")
		fmt.Fprintf(w, "\nparked (chain): %d parked: %.0f bytes of Redis memory per task (%.0f in the parked list, the rest in the retry set); %d parked: %.0f; a pending task: %.0f\n",
			c.parked, v, inList, fewParked, few, pending)
		manyCPU, _ := f.get("parked_many_wake_redis_cpu_us")
		fewCPU, _ := f.get("parked_few_wake_redis_cpu_us")
		manyMS, _ := f.get("parked_many_wake_ms")
		fewMS, _ := f.get("parked_few_wake_ms")
		fmt.Fprintf(w, "wake (first %d after the release): %d parked: %.0f µs Redis CPU, %.2f ms each; %d parked: %.0f µs, %.2f ms each\n",
			min(c.wakes, fewParked), fewParked, fewCPU, fewMS, c.parked, manyCPU, manyMS)
	}
	ratios := f.ratios()
	if len(ratios) > 0 {
		fmt.Fprintln(w)
		for _, k := range slices.Sorted(maps.Keys(ratios)) {
			fmt.Fprintf(w, "%-34s %.2f\n", k, ratios[k])
		}
	}
	if n := releaseErrors.Load(); n > 0 {
		fmt.Fprintf(w, "peer releases that failed: %d\n", n)
	}
	for _, msg := range b.failures {
		fmt.Fprintln(w, msg)
	}
	if c.json {
		out := map[string]any{}
		for k := range f {
			out[k], _ = f.get(k)
		}
		for k, v := range ratios {
			out[k] = v
		}
		out["peer_release_errors"] = releaseErrors.Load()
		out["flash_exact"] = len(b.failures) == 0
		body, err := json.Marshal(out)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(body))
	}
	if len(b.failures) > 0 {
		return errors.New("a locked mode lost updates in the flash sale")
	}
	return nil
}
