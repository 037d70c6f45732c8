package main

import (
	"math"
	"slices"
)

// spread summarizes one figure over the rounds: the median counts, the
// quartiles and extremes say how much to trust it.
type spread struct {
	Median float64   `json:"median"`
	Q1     float64   `json:"q1"`
	Q3     float64   `json:"q3"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Rounds []float64 `json:"rounds"`
}

// summarizeRounds returns the spread of vs, which holds one value per
// round in round order. +Inf sorts last, so a starved round moves the
// upper quartile before the median.
func summarizeRounds(vs []float64) spread {
	if len(vs) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(vs))
	return spread{
		Median: quantile(s, 0.5),
		Q1:     quantile(s, 0.25),
		Q3:     quantile(s, 0.75),
		Min:    s[0],
		Max:    s[len(s)-1],
		Rounds: slices.Clone(vs),
	}
}

// quantile interpolates linearly between the closest ranks of sorted.
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
	if lo == hi || math.IsInf(sorted[hi], 0) {
		return sorted[hi]
	}
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// ratios divides a by b round by round: both were measured a few seconds
// apart, so a drift of the machine's speed over the run cancels out.
func ratios(a, b []float64) []float64 {
	out := make([]float64, 0, min(len(a), len(b)))
	for i := range min(len(a), len(b)) {
		if b[i] == 0 {
			out = append(out, math.Inf(1))
			continue
		}
		out = append(out, a[i]/b[i])
	}
	return out
}
