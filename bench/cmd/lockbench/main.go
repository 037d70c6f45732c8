// Command lockbench compares turnstile's lock with a minimal hand-written
// lock (baseline), redsync and redislock, in one run against a redis-server
// it starts on a free 127.0.0.1 port and kills when it exits.
//
// For each library it measures acquire+release cycles per second on free
// keys (1 and 64 goroutines; the median of -rounds interleaved rounds), then 16 and 128 goroutines taking turns on
// one key, each holding it for -hold: acquisitions per second against an
// ideal loop that holds back to back with no lock, the gap from a release
// to the next acquisition, the p99 wait, fairness, client round trips and
// Redis CPU per acquisition, and overlapping holders (which must be 0).
// Goroutines are spread over -procs clients, each standing for a process.
//
// Usage, from the repository root or from bench/:
//
//	go run ./bench/cmd/lockbench [-libs turnstile,baseline] [-duration 4s] [-json]
//
// With -json the last line of stdout is one JSON object:
// {"ideal_per_s": N, "libs": {NAME: {...}}}. Its fairness fields are null
// when a goroutine never acquired; starved and starved_128 count those.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
)

// Goroutine counts of the phases; the JSON field names carry them.
const (
	uncontendedFew, uncontendedMany = 1, 64
	contendedFew, contendedMany     = 16, 128
)

type config struct {
	libs        []library
	uncontended time.Duration
	contended   time.Duration
	hold        time.Duration
	ttl         time.Duration
	wait        time.Duration
	procs       int
	rounds      int
	json        bool
	redisServer string
}

// result is one library's measurements.
type result struct {
	uncontendedFew, uncontendedMany float64 // cycles per second
	contendedFew, contendedMany     contention
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

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
	results := make(map[string]result)
	if err := uncontended(ctx, benches, cfg, results); err != nil {
		return err
	}
	idealPerSec := ideal(ctx, cfg.contended, cfg.hold)
	progress("ideal: %.0f holds/s", idealPerSec)
	for _, b := range benches {
		r := results[b.name]
		if r.contendedFew, err = b.contended(ctx, contendedFew, cfg.contended, cfg.hold); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		if r.contendedMany, err = b.contended(ctx, contendedMany, cfg.contended, cfg.hold); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		results[b.name] = r
		progress("%s: contended %.0f/s (16g), %.0f/s (128g)", b.name, r.contendedFew.perSec, r.contendedMany.perSec)
	}
	return report(os.Stdout, cfg, idealPerSec, results)
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	var cfg config
	names := make([]string, len(libraries))
	for i, l := range libraries {
		names[i] = l.name
	}
	libs := fs.String("libs", strings.Join(names, ","), "comma-separated libraries to run")
	fs.DurationVar(&cfg.contended, "duration", 4*time.Second, "length of each contended phase, and of the ideal loop")
	fs.DurationVar(&cfg.uncontended, "uncontended", 2*time.Second, "length of each uncontended phase")
	fs.DurationVar(&cfg.hold, "hold", time.Millisecond, "how long a contended holder keeps the lock")
	fs.DurationVar(&cfg.ttl, "ttl", 10*time.Second, "lock TTL, the same for every library")
	fs.DurationVar(&cfg.wait, "wait", 30*time.Second, "wait budget of turnstile and of the tuned peers")
	fs.IntVar(&cfg.procs, "procs", 2, "simulated processes: each has its own client and locker")
	fs.IntVar(&cfg.rounds, "rounds", 3, "interleaved rounds of the uncontended phases; the median counts")
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
	case cfg.procs < 1 || cfg.rounds < 1:
		return config{}, fmt.Errorf("-procs %d, -rounds %d: need at least 1", cfg.procs, cfg.rounds)
	case cfg.uncontended <= 0 || cfg.contended <= 0 || cfg.hold <= 0:
		return config{}, errors.New("-uncontended, -duration and -hold must be positive")
	case cfg.wait < time.Millisecond:
		return config{}, errors.New("-wait must be at least 1ms")
	}
	return cfg, nil
}

// openBench opens one library's clients and lockers, one per simulated
// process.
func openBench(srv *redisserver.Server, lib library, cfg config) (*bench, error) {
	b := &bench{name: lib.name, srv: srv, procs: newProcesses(srv.Addr(), cfg.procs)}
	for _, c := range b.procs.clients {
		lk, err := lib.open(c, cfg.ttl, cfg.wait)
		if err != nil {
			return nil, errors.Join(err, b.close())
		}
		b.lockers = append(b.lockers, lk)
	}
	return b, nil
}

// uncontended measures every library's cycles on free keys in -rounds
// rounds, each running the libraries one after another, and keeps each
// library's median: on a shared machine the speed drifts within a run, and
// interleaving spreads the drift over every library instead of charging it
// to whichever ran first.
func uncontended(ctx context.Context, benches []*bench, cfg config, results map[string]result) error {
	few := make(map[string][]float64)
	many := make(map[string][]float64)
	for round := range cfg.rounds {
		for _, b := range benches {
			f, err := b.uncontended(ctx, uncontendedFew, cfg.uncontended)
			if err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			m, err := b.uncontended(ctx, uncontendedMany, cfg.uncontended)
			if err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			few[b.name], many[b.name] = append(few[b.name], f), append(many[b.name], m)
			progress("%s: uncontended round %d: %.0f/s (1g), %.0f/s (64g)", b.name, round+1, f, m)
		}
	}
	for _, b := range benches {
		results[b.name] = result{uncontendedFew: median(few[b.name]), uncontendedMany: median(many[b.name])}
	}
	return nil
}

func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// progress tells the user on stderr what is done, keeping stdout for the
// report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lockbench: "+format+"\n", args...)
}
