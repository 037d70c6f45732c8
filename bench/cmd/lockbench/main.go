// Command lockbench compares turnstile's lock with a fenced floor (the
// least a fenced lock can do), a minimal unfenced baseline, redsync and
// redislock, in one run against a redis-server it starts on a free
// 127.0.0.1 port and kills when it exits.
//
// It runs -rounds rounds. Each round runs every phase for every library,
// the libraries taking turns in an order that rotates from round to round,
// an uncontended phase in -slices slices with the order rotating slice by
// slice, so that a drift of the machine's speed (another benchmark sharing
// the cores) is spread over every library instead of charged to whichever
// ran then. Every figure is
// the median of the rounds, and every ratio is computed round by round
// (both sides measured seconds apart) and printed as its median with the
// interquartile range.
//
// The phases: acquire+release cycles per second on free keys (1 and 64
// goroutines, -uncontended each), then goroutines taking turns on one key
// for -duration, each holding it for -hold: 16 and 128 goroutines spread
// over -procs simulated processes, and 16 goroutines in each of -multi
// processes. A simulated process has its own client and locker. Of a
// contended phase it reports utilization (the holders' measured hold time
// summed, over wall time), acquisitions per second, the gap from a release
// to the next acquisition, the p99 wait, fairness, client round trips and
// Redis CPU per acquisition, and overlapping holders (which must be 0).
//
// Usage, from the repository root or from bench/:
//
//	go run ./bench/cmd/lockbench [-libs turnstile,floor] [-rounds 9] [-duration 1s] [-json]
//
// With -json the last line of stdout is one JSON object:
// {"rounds": N, "libs": {LIB: {PHASE: {FIGURE: SPREAD}}}, "checks": [...]},
// where SPREAD is {"median", "q1", "q3", "min", "max", "rounds": [...]}
// and fairness is null in a round where a goroutine never acquired.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

// Goroutine counts of the phases.
const (
	uncontendedFew, uncontendedMany = 1, 64
	contendedFew, contendedMany     = 16, 128
	// perProcess is the goroutines per process of the multi-process phase.
	perProcess = 16
)

type config struct {
	libs        []library
	uncontended time.Duration
	contended   time.Duration
	hold        time.Duration
	ttl         time.Duration
	wait        time.Duration
	procs       int
	multi       int
	rounds      int
	slices      int
	json        bool
	redisServer string
}

// phase is one measurement each library takes once per round.
type phase struct {
	name       string // JSON key
	title      string
	goroutines int
	procs      int // goroutine i uses process i mod procs
	contended  bool
}

func phases(cfg config) []phase {
	return []phase{
		{"uncontended_1g", "1 goroutine", uncontendedFew, cfg.procs, false},
		{"uncontended_64g", "64 goroutines", uncontendedMany, cfg.procs, false},
		{"contended_16g", fmt.Sprintf("16 goroutines over %d processes", cfg.procs), contendedFew, cfg.procs, true},
		{"contended_128g", fmt.Sprintf("128 goroutines over %d processes", cfg.procs), contendedMany, cfg.procs, true},
		{
			fmt.Sprintf("contended_%dx16g", cfg.multi), fmt.Sprintf("%d processes x 16 goroutines", cfg.multi),
			cfg.multi * perProcess, cfg.multi, true,
		},
	}
}

// figures are one library's measurements in one phase of one round, by
// JSON name.
type figures map[string]float64

// rounds holds every round's figures: rounds[lib][phase][round].
type rounds map[string]map[string][]figures

func (r rounds) add(lib, phase string, f figures) {
	if r[lib] == nil {
		r[lib] = make(map[string][]figures)
	}
	r[lib][phase] = append(r[lib][phase], f)
}

// series returns one figure's values, round by round.
func (r rounds) series(lib, phase, figure string) []float64 {
	fs := r[lib][phase]
	vs := make([]float64, len(fs))
	for i, f := range fs {
		vs[i] = f[figure]
	}
	return vs
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

// run parses args, measures, and writes the report to w.
func run(ctx context.Context, args []string, w io.Writer) (err error) {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}

	srv, err := redisserver.Start(ctx, cfg.redisServer)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Stop()) }()
	progress("redis-server pid %d on %s", srv.Pid(), srv.Addr())

	benches := make([]*bench, 0, len(cfg.libs))
	defer func() {
		for _, b := range benches {
			err = errors.Join(err, b.close())
		}
	}()
	for _, lib := range cfg.libs {
		b, err := openBench(srv, lib, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", lib.name, err)
		}
		benches = append(benches, b)
	}
	// A short unrecorded pass dials every pool's connections and loads
	// every script, which the first round would otherwise pay for.
	for _, b := range benches {
		if err := b.uncontended(ctx, uncontendedMany, max(cfg.procs, cfg.multi), warmUp, &phaseRun{}); err != nil {
			return fmt.Errorf("%s: warm-up: %w", b.name, err)
		}
	}
	results := make(rounds)
	started := time.Now()
	for round := range cfg.rounds {
		for _, ph := range phases(cfg) {
			runs := make([]phaseRun, len(benches))
			for slice := range cfg.slices {
				for i := range benches {
					j := (i + round + slice) % len(benches)
					if err := benches[j].slice(ctx, ph, round, slice, cfg, &runs[j]); err != nil {
						return fmt.Errorf("%s: round %d: %w", benches[j].name, round+1, err)
					}
				}
			}
			for i, b := range benches {
				results.add(b.name, ph.name, runs[i].figures(ph))
			}
		}
		progress("round %d of %d done after %s", round+1, cfg.rounds, time.Since(started).Round(time.Second))
	}
	return report(w, cfg, results)
}

// warmUp is the length of the unrecorded pass before the first round.
const warmUp = 200 * time.Millisecond

// slice runs one slice of one phase of one round and adds it to run. A
// contended phase runs whole in the first slice: every restart of its
// goroutines lets the first few in line take one turn more (3 slices of
// 500 ms put 128 goroutines' fairness at 1.50 where one piece of 1.5 s
// measured 1.20), and its figures are each library's own, not ratios of
// two libraries measured apart.
func (b *bench) slice(ctx context.Context, ph phase, round, slice int, cfg config, run *phaseRun) error {
	if !ph.contended {
		return b.uncontended(ctx, ph.goroutines, ph.procs, cfg.uncontended/time.Duration(cfg.slices), run)
	}
	if slice > 0 {
		return nil
	}
	// A key of its own per round: none inherits another's queue.
	key := fmt.Sprintf("%s:%s:r%d", b.name, ph.name, round)
	return b.contended(ctx, key, ph.goroutines, ph.procs, cfg.contended, cfg.hold, run)
}

// figures are what run measured.
func (run *phaseRun) figures(ph phase) figures {
	if !ph.contended {
		f := figures{figPerSec: float64(run.cycles) / run.wall.Seconds()}
		if run.cycles > 0 {
			f[figTrips] = float64(run.trips) / float64(run.cycles)
			f[figCPU] = micros(run.cpu / time.Duration(run.cycles))
		}
		return f
	}
	c := run.contention()
	return figures{
		figPerSec:      c.perSec,
		figUtilization: c.utilization,
		figGapMean:     micros(c.gapMean),
		figGapP99:      micros(c.gapP99),
		figWaitP99:     millis(c.waitP99),
		figFairness:    c.fairness,
		figStarved:     float64(c.starved),
		figGaveUp:      float64(c.gaveUp),
		figTrips:       c.tripsPerAcq,
		figCPU:         micros(c.cpuPerAcq),
		figOverlaps:    float64(c.overlaps),
	}
}

// Figure names, as in the JSON.
const (
	figPerSec      = "per_s"
	figUtilization = "utilization"
	figGapMean     = "gap_mean_us"
	figGapP99      = "gap_p99_us"
	figWaitP99     = "wait_p99_ms"
	figFairness    = "fairness"
	figStarved     = "starved"
	figGaveUp      = "gave_up"
	figTrips       = "round_trips_per_acq" // an uncontended cycle is one acquisition
	figCPU         = "redis_cpu_us_per_acq"
	figOverlaps    = "overlaps"
)

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	var cfg config
	var names, defaults []string
	for _, l := range libraries {
		names = append(names, l.name)
		if !l.probe {
			defaults = append(defaults, l.name)
		}
	}
	libs := fs.String("libs", strings.Join(defaults, ","), "comma-separated libraries to run, of "+strings.Join(names, ","))
	fs.DurationVar(&cfg.contended, "duration", 1500*time.Millisecond, "length of each contended phase in each round")
	fs.DurationVar(&cfg.uncontended, "uncontended", 600*time.Millisecond, "length of each uncontended phase in each round")
	fs.DurationVar(&cfg.hold, "hold", time.Millisecond, "how long a contended holder keeps the lock")
	fs.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "lock TTL, the same for every library")
	fs.DurationVar(&cfg.wait, "wait", 30*time.Second, "wait budget of turnstile and of the tuned peers")
	fs.IntVar(&cfg.procs, "procs", 2, "simulated processes of the 1, 64, 16 and 128 goroutine phases: each has its own client and locker")
	fs.IntVar(&cfg.multi, "multi", 4, "simulated processes of the multi-process phase, 16 goroutines each")
	fs.IntVar(&cfg.rounds, "rounds", 9, "interleaved rounds; every figure is the median of the rounds")
	fs.IntVar(&cfg.slices, "slices", 6, "slices of each uncontended phase in a round, the libraries taking turns slice by slice")
	fs.BoolVar(&cfg.json, "json", false, "also print one JSON object as the last line")
	fs.StringVar(&cfg.redisServer, "redis-server", "redis-server", "redis-server binary to start")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	for name := range strings.SplitSeq(*libs, ",") {
		i := slices.IndexFunc(libraries, func(l library) bool { return l.name == strings.TrimSpace(name) })
		if i < 0 {
			return config{}, fmt.Errorf("unknown library %q; choose from %s", name, strings.Join(names, ","))
		}
		cfg.libs = append(cfg.libs, libraries[i])
	}
	switch {
	case cfg.procs < 1 || cfg.multi < 1 || cfg.rounds < 1 || cfg.slices < 1:
		return config{}, fmt.Errorf("-procs %d, -multi %d, -rounds %d, -slices %d: need at least 1", cfg.procs, cfg.multi, cfg.rounds, cfg.slices)
	case cfg.uncontended <= 0 || cfg.contended <= 0 || cfg.hold <= 0:
		return config{}, errors.New("-uncontended, -duration and -hold must be positive")
	case cfg.wait < time.Millisecond:
		return config{}, errors.New("-wait must be at least 1ms")
	}
	return cfg, nil
}

// openBench opens one library's clients and lockers, one per simulated
// process, as many as the phase with the most processes uses.
func openBench(srv *redisserver.Server, lib library, cfg config) (*bench, error) {
	b := &bench{name: lib.name, srv: srv, procs: newProcesses(srv.Addr(), max(cfg.procs, cfg.multi))}
	for _, c := range b.procs.clients {
		lk, err := lib.open(c, cfg.ttl, cfg.wait)
		if err != nil {
			return nil, errors.Join(err, b.close())
		}
		b.lockers = append(b.lockers, lk)
	}
	return b, nil
}

// progress tells the user on stderr what is done, keeping stdout for the
// report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lockbench: "+format+"\n", args...)
}
