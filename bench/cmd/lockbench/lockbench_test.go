package main

import (
	"bytes"
	"encoding/json"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

func TestSummarizeRounds(t *testing.T) {
	t.Parallel()
	s := summarizeRounds([]float64{5, 1, 4, 2, 3})
	if s.Median != 3 || s.Q1 != 2 || s.Q3 != 4 || s.Min != 1 || s.Max != 5 {
		t.Errorf("summarizeRounds(5,1,4,2,3) = %+v, want median 3, q1 2, q3 4, min 1, max 5", s)
	}
	if !slices.Equal(s.Rounds, []float64{5, 1, 4, 2, 3}) {
		t.Errorf("rounds = %v, want them in round order", s.Rounds)
	}
	even := summarizeRounds([]float64{1, 2, 3, 4})
	if even.Median != 2.5 || even.Q1 != 1.75 || even.Q3 != 3.25 {
		t.Errorf("summarizeRounds(1,2,3,4) = %+v, want median 2.5, q1 1.75, q3 3.25", even)
	}
	// A starved round (fairness +Inf) must not make the median infinite
	// while most rounds served every goroutine.
	starved := summarizeRounds([]float64{1.1, math.Inf(1), 1.2})
	if starved.Median != 1.2 || !math.IsInf(starved.Max, 1) || !math.IsInf(starved.Q3, 1) {
		t.Errorf("summarizeRounds(1.1,inf,1.2) = %+v, want median 1.2 and q3, max inf", starved)
	}
}

func TestRatios(t *testing.T) {
	t.Parallel()
	got := ratios([]float64{2, 9, 3}, []float64{1, 3, 0})
	if got[0] != 2 || got[1] != 3 || !math.IsInf(got[2], 1) {
		t.Errorf("ratios = %v, want [2 3 +Inf]: round by round, x/0 infinite", got)
	}
}

// testRounds builds the results of one contended phase: per library, its
// p99 wait and Redis CPU per acquisition in each of three rounds.
func testRounds(phase string, libs map[string][2]float64) rounds {
	r := make(rounds)
	for lib, v := range libs {
		for range 3 {
			r.add(lib, phase, figures{figWaitP99: v[0], figCPU: v[1]})
		}
	}
	return r
}

func testConfig(names ...string) config {
	var cfg config
	for _, n := range names {
		i := slices.IndexFunc(libraries, func(l library) bool { return l.name == n })
		cfg.libs = append(cfg.libs, libraries[i])
	}
	return cfg
}

func TestCPUPeers(t *testing.T) {
	t.Parallel()
	const phase = "contended_16g"
	cfg := testConfig("turnstile", "floor", "baseline", "redsync", "mutex")
	r := testRounds(phase, map[string][2]float64{
		"turnstile": {20, 200}, // best p99: the window is 200 ms
		"floor":     {150, 400},
		"baseline":  {200, 300}, // at the window's edge: admitted
		"redsync":   {201, 100}, // cheapest, but outside the window
		"mutex":     {5, 1},     // a probe: neither best nor peer
	})
	peers := cpuPeers(cfg, r, phase)
	want := map[string]bool{"floor": true, "baseline": true}
	if len(peers) != len(want) || !peers["floor"] || !peers["baseline"] {
		t.Errorf("cpuPeers = %v, want %v", peers, want)
	}
	if got := lowestCPUPeer(cfg, r, phase); got != "baseline" {
		t.Errorf("lowestCPUPeer = %q, want baseline", got)
	}
}

func TestFloor(t *testing.T) {
	t.Parallel()
	srv := redisserver.ForTest(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	f := floor{c: c, ttl: 10 * time.Second}
	ctx := t.Context()

	t.Run("FenceGrowsWithEachAcquisition", func(t *testing.T) {
		t.Parallel()
		for want := int64(1); want <= 3; want++ {
			unlock, err := f.lock(ctx, "fence")
			if err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx, "{fence}:fence").Int64(); err != nil || got != want {
				t.Fatalf("fence after acquisition %d = %d, %v; want %d", want, got, err, want)
			}
			if err := unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("ReleaseOfALostLockFails", func(t *testing.T) {
		t.Parallel()
		unlock, err := f.lock(ctx, "lost")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "{lost}", "another token", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := unlock(ctx); err == nil {
			t.Fatal("unlock deleted a lock another token holds")
		}
		if got, _ := c.Get(ctx, "{lost}").Result(); got != "another token" {
			t.Errorf("lock value = %q, want the other token's", got)
		}
	})
	t.Run("ContendersExclude", func(t *testing.T) {
		t.Parallel()
		var holders, overlaps atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					unlock, err := f.lock(ctx, "contended")
					if err != nil {
						t.Error(err)
						return
					}
					if holders.Add(1) > 1 {
						overlaps.Add(1)
					}
					runtime.Gosched() // give an intruder the chance to show
					holders.Add(-1)
					if err := unlock(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if n := overlaps.Load(); n > 0 {
			t.Errorf("%d overlapping holders", n)
		}
	})
}

// TestRun runs two short rounds end to end and reads the JSON line.
func TestRun(t *testing.T) {
	t.Parallel()
	redisserver.ForTest(t) // for the skip or failure only: run starts its own
	var out bytes.Buffer
	err := run(t.Context(), []string{
		"-libs", "turnstile,floor,baseline", "-rounds", "2",
		"-uncontended", "50ms", "-duration", "150ms", "-json",
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var got struct {
		Rounds int `json:"rounds"`
		Libs   map[string]map[string]map[string]struct{ Rounds []*float64 }
		Checks []check `json:"checks"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("last line is no JSON object: %v\n%s", err, out.String())
	}
	if got.Rounds != 2 || len(got.Libs) != 3 {
		t.Fatalf("rounds %d, libs %d; want 2 and 3", got.Rounds, len(got.Libs))
	}
	for lib, phases := range got.Libs {
		if len(phases) != 5 {
			t.Errorf("%s: %d phases, want 5", lib, len(phases))
		}
		for phase, figs := range phases {
			for fig, s := range figs {
				if len(s.Rounds) != 2 {
					t.Errorf("%s %s %s: %d rounds, want 2", lib, phase, fig, len(s.Rounds))
				}
			}
			if !strings.HasPrefix(phase, "contended") {
				continue
			}
			for _, v := range figs[figOverlaps].Rounds {
				if v == nil || *v != 0 {
					t.Errorf("%s %s: overlaps %v, want 0", lib, phase, v)
				}
			}
		}
	}
	names := make([]string, len(got.Checks))
	for i, c := range got.Checks {
		names[i] = c.Figure
	}
	for _, want := range []string{"uncontended 1g ÷ floor", "uncontended 64g ÷ baseline", "contended_4x16g utilization"} {
		if !slices.Contains(names, want) {
			t.Errorf("checks %v lack %q", names, want)
		}
	}
	if !strings.Contains(out.String(), "| turnstile |") {
		t.Errorf("no markdown row for turnstile in\n%s", out.String())
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.rounds < 9 {
		t.Errorf("default rounds %d, want at least 9", cfg.rounds)
	}
	if slices.ContainsFunc(cfg.libs, func(l library) bool { return l.probe }) {
		t.Error("a probe runs by default")
	}
	if _, err := parseFlags([]string{"-libs", "nope"}); err == nil {
		t.Error("an unknown library was accepted")
	}
}
