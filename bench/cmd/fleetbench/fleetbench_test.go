package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// need skips t without bin on PATH, or fails it under CI=true, where a
// missing binary is a broken setup.
func need(t *testing.T, bin string) bool {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found under CI=true: %v", bin, err)
		}
		return false
	}
	return true
}

// TestFleetbench_Tiny runs the whole bench in a tiny configuration: one
// worker process on one redis-server and, with redis-cli, on a 3-master
// cluster, both key patterns and the memory step, and checks that every
// figure it reports is one a working fleet gives.
func TestFleetbench_Tiny(t *testing.T) {
	if !need(t, "redis-server") {
		t.Skip("redis-server not found")
	}
	backends := "single"
	if need(t, "redis-cli") {
		backends += ",cluster"
	} else {
		t.Log("redis-cli not found: the cluster is left out")
	}
	cfg, err := parseFlags([]string{
		"-workers", "1", "-backends", backends, "-tasks", "150", "-hot-tasks", "90", "-hot-orders", "3",
		"-rounds", "1", "-latency-for", "400ms", "-orders-for-memory", "300", "-timeout", "60s", "-json",
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBench(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(b.dir) })
	if err := b.all(t.Context()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := b.report(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var got struct {
		Runs   []result `json:"runs"`
		Memory *memory  `json:"memory"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("last line is not the JSON report: %v\n%s", err, out.String())
	}
	if want := 2 * len(cfg.backends); len(got.Runs) != want {
		t.Fatalf("%d runs, want %d:\n%s", len(got.Runs), want, out.String())
	}
	for _, r := range got.Runs {
		name := r.Backend + "/" + r.Pattern
		nodes := 1
		if r.Backend == "cluster" {
			nodes = 3
		}
		switch {
		case !r.InvariantsOK || r.Violations != 0:
			t.Errorf("%s: invariants OK %t, %d violations", name, r.InvariantsOK, r.Violations)
		case r.Tasks != map[string]int{patternDistinct: 150, patternHot: 90}[r.Pattern] || r.TasksPerS <= 0 || r.Orders <= 0:
			t.Errorf("%s: %d tasks at %.0f/s over %d orders", name, r.Tasks, r.TasksPerS, r.Orders)
		case r.Efficiency != 1:
			t.Errorf("%s: efficiency %.2f of a one-worker fleet against itself, want 1", name, r.Efficiency)
		case r.LatencyTasks <= 0 || r.LatencySampled <= 0 || r.LatencySampled > r.LatencyTasks:
			t.Errorf("%s: %d of %d latency tasks timed", name, r.LatencySampled, r.LatencyTasks)
		case !(r.P50ms > 0 && r.P99ms >= r.P50ms && r.P99ms < 60_000):
			t.Errorf("%s: p50 %.1f ms, p99 %.1f ms", name, r.P50ms, r.P99ms)
		case r.WorkerCPUms <= 0 || r.RedisCPUms <= 0 || len(r.RedisCPUmsByNode) != nodes:
			t.Errorf("%s: worker CPU %.3f ms, Redis %.3f ms per task, %d nodes measured", name, r.WorkerCPUms, r.RedisCPUms, len(r.RedisCPUmsByNode))
		}
	}
	m := got.Memory
	switch {
	case m == nil:
		t.Fatalf("no memory step in the report:\n%s", out.String())
	case m.Orders != 300 || !m.InvariantsOK || m.Paid <= 0 || m.Paid >= m.Orders:
		t.Errorf("memory: %d orders, %d paid, invariants OK %t", m.Orders, m.Paid, m.InvariantsOK)
	case m.KeysPerOrder < 1 || m.BytesPerOrder < 100:
		t.Errorf("memory: %.2f keys and %.0f bytes per order: an order keeps at least its record", m.KeysPerOrder, m.BytesPerOrder)
	}
	if t.Failed() {
		t.Logf("report:\n%s", out.String())
	}
}

func TestEfficiencies(t *testing.T) {
	t.Parallel()
	runs := []result{
		{Backend: "single", Pattern: patternDistinct, Workers: 1, TasksPerS: 1000, WorkerCPUms: 0.5, RedisCPUms: 0.25, RedisCPUmsByNode: []float64{0.25}},
		{Backend: "single", Pattern: patternDistinct, Workers: 4, TasksPerS: 2000},
		{Backend: "cluster", Pattern: patternDistinct, Workers: 2, TasksPerS: 900, WorkerCPUms: 1, RedisCPUms: 0.6, RedisCPUmsByNode: []float64{0.1, 0.4, 0.1}},
		{Backend: "cluster", Pattern: patternDistinct, Workers: 4, TasksPerS: 900},
	}
	efficiencies(runs)
	for i, want := range []float64{1, 0.5, 1, 0.5} {
		if runs[i].Efficiency != want {
			t.Errorf("%s with %d workers: efficiency %.2f, want %.2f", runs[i].Backend, runs[i].Workers, runs[i].Efficiency, want)
		}
	}
	got := ceilings(runs, 2)
	want := []ceiling{
		{Backend: "single", Pattern: patternDistinct, PerWorkerCore: 2000, BusiestNode: 4000, Here: 2000 / 0.75},
		{Backend: "cluster", Pattern: patternDistinct, PerWorkerCore: 1000, BusiestNode: 2500, Here: 2000 / 1.6},
	}
	if len(got) != len(want) {
		t.Fatalf("ceilings %+v, want %+v", got, want)
	}
	for i := range want {
		if d := got[i].Here - want[i].Here; got[i].PerWorkerCore != want[i].PerWorkerCore || got[i].BusiestNode != want[i].BusiestNode || d > 1e-9 || d < -1e-9 {
			t.Errorf("ceiling %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestKeyKind(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"turnstile:lock:{order:m-0000042}:fence":      "turnstile:lock:{order:<order>}:fence",
		"turnstile:ledger:{ev-3}:order:m-0012345":     "turnstile:ledger:{ev-N}:order:<order>",
		"asynq:{default}:processed:2026-11-30":        "asynq:{default}:processed:N-N-N",
		"turnstile:gateway:{m-0000001}:idem:capture:": "turnstile:gateway:{<order>}:idem:capture:",
	} {
		if got := keyKind(key); got != want {
			t.Errorf("keyKind(%q) = %q, want %q", key, got, want)
		}
	}
}
