package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// cpuPeerWindow admits a peer to the Redis CPU comparison when its p99
// wait is at most this many times the best in the run: a library that
// sleeps between polls spends little CPU because it leaves the key idle,
// which is no yardstick for a lock that hands it on at once.
const cpuPeerWindow = 10

// report prints the markdown tables, turnstile's checks against the
// project's targets and, with -json, the JSON object as the last line.
func report(w io.Writer, cfg config, r rounds) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nlockbench: %d rounds, libraries rotating; figures are medians of the rounds, ratios are taken round by round and shown as median [q1-q3]\n", cfg.rounds)
	phs := phases(cfg)
	uncontendedTable(&b, cfg, r)
	for _, ph := range phs {
		if ph.contended {
			contendedTable(&b, cfg, r, ph)
		}
	}
	checks := turnstileChecks(cfg, r)
	if len(checks) > 0 {
		fmt.Fprintf(&b, "\n### turnstile vs targets\n\n| figure | target | median [q1-q3] | min-max | verdict |\n|---|---|---|---|---|\n")
		for _, c := range checks {
			verdict := "ok"
			if !c.Pass {
				verdict = "MISS"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s-%s | %s |\n", c.Figure, c.Target, withIQR(c.Value), num(c.Value.Min), num(c.Value.Max), verdict)
		}
	}
	if cfg.json {
		j, err := json.Marshal(jsonReport(cfg, r, checks))
		if err != nil {
			return err
		}
		b.WriteString("\n" + string(j) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func uncontendedTable(b *strings.Builder, cfg config, r rounds) {
	fmt.Fprintf(b, "\n### uncontended acquire+release cycles/s, own key per goroutine, %s per round; trips and Redis CPU per cycle\n\n", cfg.uncontended)
	fmt.Fprintf(b, "| lib | 1g/s | 64g/s | 1g ÷ floor | 1g ÷ baseline | 64g ÷ floor | 64g ÷ baseline | 1g trips | 1g redis cpu µs | 64g trips | 64g redis cpu µs |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	few, many := "uncontended_1g", "uncontended_64g"
	for _, lib := range cfg.libs {
		med := func(phase, fig string) float64 { return summarizeRounds(r.series(lib.name, phase, fig)).Median }
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %s | %s | %s | %s | %.2f | %.1f | %.2f | %.1f |\n", lib.name,
			med(few, figPerSec), med(many, figPerSec),
			ratioCell(r, lib.name, "floor", few), ratioCell(r, lib.name, "baseline", few),
			ratioCell(r, lib.name, "floor", many), ratioCell(r, lib.name, "baseline", many),
			med(few, figTrips), med(few, figCPU), med(many, figTrips), med(many, figCPU))
	}
}

// ratioCell is lib's cycles per second over base's, round by round, or "-"
// when the run lacks base.
func ratioCell(r rounds, lib, base, phase string) string {
	if _, ok := r[base]; !ok {
		return "-"
	}
	return withIQR(summarizeRounds(ratios(r.series(lib, phase, figPerSec), r.series(base, phase, figPerSec))))
}

func contendedTable(b *strings.Builder, cfg config, r rounds, ph phase) {
	fmt.Fprintf(b, "\n### contended: %s on one key, holding %s, %s per round\n\n", ph.title, cfg.hold, cfg.contended)
	fmt.Fprintf(b, "| lib | utilization | acq/s | gap mean µs | gap p99 µs | wait p99 ms | fairness | trips/acq | redis cpu µs/acq | cpu peer | overlaps | gave up |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	peers := cpuPeers(cfg, r, ph.name)
	for _, lib := range cfg.libs {
		med := func(fig string) float64 { return summarizeRounds(r.series(lib.name, ph.name, fig)).Median }
		peer := "no"
		if peers[lib.name] {
			peer = "yes"
		}
		if lib.name == "turnstile" || lib.probe {
			peer = "-"
		}
		trips := fmt.Sprintf("%.2f", med(figTrips))
		if lib.probe {
			trips = "-" // a probe's own pools are not counted
		}
		fmt.Fprintf(b, "| %s | %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %.0f | %.0f |\n", lib.name,
			withIQR(summarizeRounds(r.series(lib.name, ph.name, figUtilization))), med(figPerSec),
			med(figGapMean), med(figGapP99), withIQR(summarizeRounds(r.series(lib.name, ph.name, figWaitP99))),
			fairnessCell(summarizeRounds(r.series(lib.name, ph.name, figFairness)), med(figStarved)), trips,
			withIQR(summarizeRounds(r.series(lib.name, ph.name, figCPU))), peer,
			sum(r.series(lib.name, ph.name, figOverlaps)), med(figGaveUp))
	}
}

func fairnessCell(s spread, starved float64) string {
	if math.IsInf(s.Median, 1) {
		return fmt.Sprintf("inf (%.0f starved)", starved)
	}
	return withIQR(s)
}

// cpuPeers returns the libraries other than turnstile whose median p99
// wait in phase is within cpuPeerWindow of the best library's.
func cpuPeers(cfg config, r rounds, phase string) map[string]bool {
	best := math.Inf(1)
	for _, lib := range cfg.libs {
		if !lib.probe {
			best = min(best, summarizeRounds(r.series(lib.name, phase, figWaitP99)).Median)
		}
	}
	peers := make(map[string]bool)
	for _, lib := range cfg.libs {
		p99 := summarizeRounds(r.series(lib.name, phase, figWaitP99)).Median
		if lib.name != "turnstile" && !lib.probe && p99 <= cpuPeerWindow*best {
			peers[lib.name] = true
		}
	}
	return peers
}

// check is one of turnstile's figures against its target.
type check struct {
	Figure string `json:"figure"`
	Target string `json:"target"`
	Value  spread `json:"value"`
	Pass   bool   `json:"pass"`
	Peer   string `json:"peer,omitempty"`
}

// contendedTargets are turnstile's targets per contended phase, in phase
// order: utilization at least, p99 wait in ms at most. The wait bound of
// the multi-process phase (64 goroutines) is halfway between, in
// proportion to the goroutines, as a fair queue's wait grows with them.
var contendedTargets = []struct{ utilization, waitMS float64 }{{0.9, 40}, {0.88, 250}, {0.85, 125}}

// turnstileChecks checks turnstile's figures against the project's
// targets, leaving out what the run cannot tell (no turnstile, no floor).
func turnstileChecks(cfg config, r rounds) []check {
	const t = "turnstile"
	if _, ok := r[t]; !ok {
		return nil
	}
	var checks []check
	atLeast := func(figure string, s spread, bound float64) {
		checks = append(checks, check{Figure: figure, Target: fmt.Sprintf(">= %.2f", bound), Value: s, Pass: s.Median >= bound})
	}
	atMost := func(figure string, s spread, bound float64) {
		checks = append(checks, check{Figure: figure, Target: fmt.Sprintf("<= %.2f", bound), Value: s, Pass: s.Median <= bound})
	}
	if _, ok := r["floor"]; ok {
		atLeast("uncontended 1g ÷ floor", summarizeRounds(ratios(r.series(t, "uncontended_1g", figPerSec), r.series("floor", "uncontended_1g", figPerSec))), 0.95)
	}
	if _, ok := r["baseline"]; ok {
		atLeast("uncontended 64g ÷ baseline", summarizeRounds(ratios(r.series(t, "uncontended_64g", figPerSec), r.series("baseline", "uncontended_64g", figPerSec))), 1.0)
	}
	i := 0
	for _, ph := range phases(cfg) {
		if !ph.contended {
			continue
		}
		target := contendedTargets[i]
		i++
		series := func(fig string) spread { return summarizeRounds(r.series(t, ph.name, fig)) }
		atLeast(ph.name+" utilization", series(figUtilization), target.utilization)
		atMost(ph.name+" wait p99 ms", series(figWaitP99), target.waitMS)
		atMost(ph.name+" fairness", series(figFairness), 1.5)
		atMost(ph.name+" trips/acq", series(figTrips), 3)
		overlaps := r.series(t, ph.name, figOverlaps)
		checks = append(checks, check{Figure: ph.name + " overlaps", Target: "= 0", Value: summarizeRounds(overlaps), Pass: sum(overlaps) == 0})
		if peer := lowestCPUPeer(cfg, r, ph.name); peer != "" {
			atMost(ph.name+" redis cpu ÷ "+peer, summarizeRounds(ratios(r.series(t, ph.name, figCPU), r.series(peer, ph.name, figCPU))), 0.8)
			checks[len(checks)-1].Peer = peer
		}
	}
	return checks
}

// lowestCPUPeer returns the CPU peer with the lowest median Redis CPU per
// acquisition, or "" when there is none.
func lowestCPUPeer(cfg config, r rounds, phase string) string {
	var (
		name string
		low  float64
	)
	for lib := range cpuPeers(cfg, r, phase) {
		cpu := summarizeRounds(r.series(lib, phase, figCPU)).Median
		if name == "" || cpu < low || (cpu == low && lib < name) {
			name, low = lib, cpu
		}
	}
	return name
}

// jsonReport is the -json object: every figure of every library and
// phase with its spread, and the checks.
func jsonReport(cfg config, r rounds, checks []check) map[string]any {
	libs := make(map[string]any, len(r))
	for lib, byPhase := range r {
		m := make(map[string]any, len(byPhase))
		for phase, fs := range byPhase {
			figs := make(map[string]spread)
			for name := range fs[0] {
				figs[name] = summarizeRounds(r.series(lib, phase, name))
			}
			m[phase] = figs
		}
		libs[lib] = m
	}
	return map[string]any{
		"rounds":          cfg.rounds,
		"hold_ms":         millis(cfg.hold),
		"uncontended_s":   cfg.uncontended.Seconds(),
		"contended_s":     cfg.contended.Seconds(),
		"procs":           cfg.procs,
		"multi":           cfg.multi,
		"cpu_peer_window": cpuPeerWindow,
		"libs":            libs,
		"checks":          checks,
	}
}

// MarshalJSON rounds to three decimals and writes infinities (a starved
// round's fairness) as null, which JSON has no number for.
func (s spread) MarshalJSON() ([]byte, error) {
	rs := make([]*float64, len(s.Rounds))
	for i, v := range s.Rounds {
		rs[i] = jsonNum(v)
	}
	return json.Marshal(map[string]any{
		"median": jsonNum(s.Median), "q1": jsonNum(s.Q1), "q3": jsonNum(s.Q3),
		"min": jsonNum(s.Min), "max": jsonNum(s.Max), "rounds": rs,
	})
}

func jsonNum(v float64) *float64 {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return nil
	}
	v = math.Round(v*1000) / 1000
	return &v
}

// withIQR prints a median with its interquartile range.
func withIQR(s spread) string {
	return fmt.Sprintf("%s [%s-%s]", num(s.Median), num(s.Q1), num(s.Q3))
}

// num prints v with three significant digits at least two decimals below
// 10, which keeps ratios near 1 readable to the percent.
func num(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "inf"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func sum(vs []float64) float64 {
	var s float64
	for _, v := range vs {
		s += v
	}
	return s
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
