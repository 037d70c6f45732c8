package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// report prints the tables, the line of turnstile's targets and, with
// -json, the JSON object as the last line.
func report(w io.Writer, cfg config, idealPerSec float64, results map[string]result) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	base, hasBase := results["baseline"]
	fmt.Fprintf(tw, "\nuncontended acquire+release cycles/s (own key per goroutine)\n")
	fmt.Fprintf(tw, "lib\t1g/s\t64g/s\t1g÷baseline\t64g÷baseline\t\n")
	for _, lib := range cfg.libs {
		r := results[lib.name]
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t\n", lib.name, r.uncontendedFew, r.uncontendedMany,
			ratio(r.uncontendedFew, base.uncontendedFew, hasBase), ratio(r.uncontendedMany, base.uncontendedMany, hasBase))
	}
	for _, g := range []int{contendedFew, contendedMany} {
		fmt.Fprintf(tw, "\ncontended: %d goroutines on one key, holding %s; ideal %.0f/s\n", g, cfg.hold, idealPerSec)
		fmt.Fprintf(tw, "lib\tacq/s\t÷ideal\tgap mean µs\tgap p99 µs\twait p99 ms\tfairness\ttrips/acq\tredis cpu µs/acq\toverlaps\tgave up\t\n")
		for _, lib := range cfg.libs {
			c := results[lib.name].contention(g)
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.0f\t%.0f\t%.1f\t%s\t%.2f\t%.1f\t%d\t%d\t\n", lib.name, c.perSec, c.perSec/idealPerSec,
				micros(c.gapMean), micros(c.gapP99), millis(c.waitP99), fairness(c), c.tripsPerAcq, micros(c.cpuPerAcq), c.overlaps, c.gaveUp)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if line := targets(idealPerSec, results); line != "" {
		b.WriteString("\n" + line + "\n")
	}
	if cfg.json {
		j, err := json.Marshal(jsonReport(idealPerSec, results))
		if err != nil {
			return err
		}
		b.WriteString(string(j) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r result) contention(goroutines int) contention {
	if goroutines == contendedMany {
		return r.contendedMany
	}
	return r.contendedFew
}

func ratio(a, b float64, ok bool) string {
	if !ok || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func fairness(c contention) string {
	if c.starved > 0 {
		return fmt.Sprintf("inf (%d starved)", c.starved)
	}
	return fmt.Sprintf("%.2f", c.fairness)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// targets checks turnstile's numbers against the project's targets, on one
// line, leaving out what the run cannot tell (no turnstile, no peers).
func targets(idealPerSec float64, results map[string]result) string {
	t, ok := results["turnstile"]
	if !ok {
		return ""
	}
	var checks []string
	check := func(label string, v float64, format, bound string, pass bool) {
		verdict := "ok"
		if !pass {
			verdict = "MISS"
		}
		checks = append(checks, fmt.Sprintf("%s "+format+" (%s) %s", label, v, bound, verdict))
	}
	if base, ok := results["baseline"]; ok {
		check("uncontended 1g ÷ baseline", t.uncontendedFew/base.uncontendedFew, "%.2f", "≥0.95", t.uncontendedFew >= 0.95*base.uncontendedFew)
		check("64g ÷ baseline", t.uncontendedMany/base.uncontendedMany, "%.2f", "≥0.95", t.uncontendedMany >= 0.95*base.uncontendedMany)
	}
	for _, g := range []struct {
		n             int
		ideal, waitMS float64
	}{{contendedFew, 0.85, 40}, {contendedMany, 0.8, 250}} {
		c := t.contention(g.n)
		check(fmt.Sprintf("%dg ÷ ideal", g.n), c.perSec/idealPerSec, "%.2f", fmt.Sprintf("≥%.2g", g.ideal), c.perSec >= g.ideal*idealPerSec)
		check("wait p99 ms", millis(c.waitP99), "%.1f", fmt.Sprintf("≤%.0f", g.waitMS), millis(c.waitP99) <= g.waitMS)
		check("fairness", c.fairness, "%.2f", "≤1.5", c.fairness <= 1.5)
		check("trips/acq", c.tripsPerAcq, "%.2f", "≤3", c.tripsPerAcq <= 3)
		if low, name := lowestPeerCPU(results, g.n); name != "" {
			check("cpu ÷ "+name, float64(c.cpuPerAcq)/float64(low), "%.2f", "≤1.5", float64(c.cpuPerAcq) <= 1.5*float64(low))
		}
	}
	return "turnstile vs targets: " + strings.Join(checks, "; ")
}

// lowestPeerCPU returns the smallest Redis CPU per acquisition among the
// other libraries at that many goroutines, and whose it is.
func lowestPeerCPU(results map[string]result, goroutines int) (time.Duration, string) {
	var (
		low  time.Duration
		name string
	)
	for _, lib := range libraries {
		r, ok := results[lib.name]
		if !ok || lib.name == "turnstile" {
			continue
		}
		if cpu := r.contention(goroutines).cpuPerAcq; name == "" || cpu < low {
			low, name = cpu, lib.name
		}
	}
	return low, name
}

// jsonReport is the -json object. Fairness is null when a goroutine
// starved, since JSON has no infinity.
func jsonReport(idealPerSec float64, results map[string]result) map[string]any {
	libs := make(map[string]any, len(results))
	for name, r := range results {
		m := map[string]any{
			"uncontended_1g_per_s":  round(r.uncontendedFew),
			"uncontended_64g_per_s": round(r.uncontendedMany),
		}
		for suffix, c := range map[string]contention{"": r.contendedFew, "_128": r.contendedMany} {
			var fair *float64
			if c.starved == 0 {
				f := round(c.fairness)
				fair = &f
			}
			m["contended_per_s"+suffix] = round(c.perSec)
			m["gap_mean_us"+suffix] = round(micros(c.gapMean))
			m["gap_p99_us"+suffix] = round(micros(c.gapP99))
			m["wait_p99_ms"+suffix] = round(millis(c.waitP99))
			m["fairness"+suffix] = fair
			m["starved"+suffix] = c.starved
			m["gave_up"+suffix] = c.gaveUp
			m["round_trips_per_acq"+suffix] = round(c.tripsPerAcq)
			m["redis_cpu_us_per_acq"+suffix] = round(micros(c.cpuPerAcq))
			m["overlaps"+suffix] = c.overlaps
		}
		libs[name] = m
	}
	return map[string]any{"ideal_per_s": round(idealPerSec), "libs": libs}
}

// round keeps three decimals: enough for any of these numbers.
func round(v float64) float64 { return math.Round(v*1000) / 1000 }
