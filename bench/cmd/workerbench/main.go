// Command workerbench measures turnstile's worker against bare asynq and
// against the guards a team writes without it, on the same asynq server
// settings, handlers and keys, in one run against a redis-server it starts
// on a free 127.0.0.1 port and kills when it exits.
//
// Modes: bare (asynq, no lock), guard (middleware.Guard alone), chain
// (worker.New: recovery, tracing, unknown-type archiving, guard), redsync
// (a redsync Mutex per resource with redsync's defaults, busy -> error ->
// asynq's default retry delay) and redislock (bsm/redislock,
// LinearBackoff(100ms) for at most 1 s, busy -> error).
//
// Scenarios (-scenarios):
//
//   - noop, work: -tasks tasks on distinct keys, no-op and -work handlers:
//     tasks/s and the worker's and redis-server's CPU µs per task.
//   - hot, hotlong: -hot tasks holding one key for -hold, -hot-long
//     tasks holding it for -hold-long: the time until the last was done
//     over the serial ideal, the hot handlers' measured times summed.
//   - cold: -tasks cold tasks beside -hot tasks on one key, all holding
//     their key for -work: the cold tasks' rate over their rate in the
//     work scenario of the same mode and round.
//   - flash: -sale tasks on one resource, each GETs the stock and SETs it
//     one lower if positive: sold/s, p99 from the server's start to done,
//     and the check that the final stock equals the start minus the sales.
//     Bare shows the lost updates; a locked mode that loses one fails the
//     run.
//   - parked: in the chain, -parked tasks (and 100) parked on one key
//     behind a holder: Redis memory per parked task, then Redis CPU and
//     wall time per woken task for the first -wakes after the release.
//
// Every scenario runs -rounds times, the modes taking turns in an order
// that rotates round by round, and the medians are reported as a markdown
// table. Usage, from the repository root or from bench/:
//
//	go run ./bench/cmd/workerbench [-rounds 3] [-scenarios noop,flash] [-modes guard,redsync] [-json] [-commandstats]
//
// With -commandstats each noop and work phase also prints to stderr the
// Redis commands it ran per task and redis-server's socket reads and
// writes per task, from INFO: which Redis work one mode adds over another.
//
// With -json the last line of stdout is one JSON object holding every
// figure; the README's bench section lists the names.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
	"github.com/turnstilehq/turnstile/telemetry"
)

var scenarioNames = []string{"noop", "work", "hot", "hotlong", "cold", "flash", "parked"}

type config struct {
	tasks, hot, hotLong, sale, parked, wakes int
	concurrency, rounds                      int
	work, hold, holdLong                     time.Duration
	scenarios                                map[string]bool
	modes                                    []mode
	json, commandStats                       bool
	redisServer, cpuProfile                  string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "workerbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("workerbench", flag.ContinueOnError)
	var c config
	var scenarios, modes string
	fs.IntVar(&c.tasks, "tasks", 5000, "tasks on distinct keys (noop, work, cold)")
	fs.IntVar(&c.hot, "hot", 500, "tasks on the hot key (hot, cold)")
	fs.IntVar(&c.hotLong, "hot-long", 300, "tasks on the hot key (hotlong)")
	fs.IntVar(&c.sale, "sale", 2000, "tasks and units of stock in the flash sale")
	fs.IntVar(&c.parked, "parked", 10000, "tasks parked on one key (parked; 100 are parked too)")
	fs.IntVar(&c.wakes, "wakes", 100, "woken tasks measured after the release (parked)")
	fs.IntVar(&c.concurrency, "concurrency", 32, "the worker's concurrency")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of every scenario; medians are reported")
	fs.DurationVar(&c.work, "work", 2*time.Millisecond, "the handler's time in work and cold")
	fs.DurationVar(&c.hold, "hold", time.Millisecond, "the handler's time in hot")
	fs.DurationVar(&c.holdLong, "hold-long", 20*time.Millisecond, "the handler's time in hotlong")
	fs.StringVar(&scenarios, "scenarios", strings.Join(scenarioNames, ","), "scenarios to run")
	fs.StringVar(&modes, "modes", strings.Join(defaultModes, ","), "modes to run (mutex, a probe, only when named)")
	fs.BoolVar(&c.json, "json", false, "print every figure as JSON on the last line")
	fs.BoolVar(&c.commandStats, "commandstats", false, "print the Redis commands per task of the noop and work phases (INFO commandstats)")
	fs.StringVar(&c.redisServer, "redis-server", "redis-server", "the redis-server binary")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the chain's first noop phase to this file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if min(c.tasks, c.hot, c.hotLong, c.sale, c.parked, c.wakes, c.concurrency, c.rounds) < 1 {
		return c, errors.New("-tasks, -hot, -hot-long, -sale, -parked, -wakes, -concurrency and -rounds must be positive")
	}
	c.scenarios = map[string]bool{}
	for s := range strings.SplitSeq(scenarios, ",") {
		s = strings.TrimSpace(s)
		if indexOf(scenarioNames, s) < 0 {
			return c, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(scenarioNames, ","))
		}
		c.scenarios[s] = true
	}
	var err error
	c.modes, err = parseModes(modes)
	return c, err
}

type bench struct {
	cfg config
	srv *redisserver.Server
	rdb *redis.Client
	tel *telemetry.Providers

	mu  sync.Mutex // guards fig, failures and tailErrs: phases finish in the background
	fig figures
	// failures are the checks that failed, as messages.
	failures []string
	tails    sync.WaitGroup // phases finishing in the background
	tailErrs []error
}

// add records a figure of one round.
func (b *bench) add(name string, v float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fig.add(name, v)
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
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 4 * cfg.concurrency})
	defer func() { err = errors.Join(err, rdb.Close()) }()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "workerbench"})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tel.Shutdown(context.WithoutCancel(ctx))) }()
	b := &bench{cfg: cfg, srv: srv, rdb: rdb, tel: tel, fig: figures{}}
	began := time.Now()
	for round := range cfg.rounds {
		if err := b.round(ctx, round); err != nil {
			return errors.Join(err, b.drain())
		}
	}
	if err := b.drain(); err != nil {
		return err
	}
	progress("done in %s", time.Since(began).Round(time.Second))
	return b.report(os.Stdout)
}

// round runs every chosen scenario once, the modes in an order rotated by
// the round's number.
func (b *bench) round(ctx context.Context, round int) error {
	ms := make([]mode, len(b.cfg.modes))
	for i := range ms {
		ms[i] = b.cfg.modes[(i+round)%len(ms)]
	}
	on := b.cfg.scenarios
	// The last round's hot-key and flash phases may still be finishing in
	// the background; the phases that measure CPU and memory run alone.
	if err := b.drain(); err != nil {
		return err
	}
	for _, m := range ms {
		if on["noop"] {
			err := b.profiled(round == 0 && m == modeChain, func() error {
				perS, w, r, err := b.distinct(ctx, m, b.cfg.tasks, 0)
				b.add(m.String()+"_noop_per_s", perS)
				b.add(m.String()+"_noop_worker_cpu_us", w)
				b.add(m.String()+"_noop_redis_cpu_us", r)
				return err
			})
			if err != nil {
				return fmt.Errorf("noop, %s: %w", m, err)
			}
			progress("round %d noop %s done", round+1, m)
		}
	}
	for _, m := range ms {
		var alone float64
		if on["work"] || on["cold"] {
			perS, w, r, err := b.distinct(ctx, m, b.cfg.tasks, b.cfg.work)
			if err != nil {
				return fmt.Errorf("work, %s: %w", m, err)
			}
			alone = perS
			b.add(m.String()+"_work_per_s", perS)
			b.add(m.String()+"_work_worker_cpu_us", w)
			b.add(m.String()+"_work_redis_cpu_us", r)
			progress("round %d work %s: %.0f/s", round+1, m, perS)
		}
		if on["cold"] {
			perS, err := b.beside(ctx, m, b.cfg.tasks, b.cfg.hot, b.cfg.work)
			if err != nil {
				return fmt.Errorf("cold, %s: %w", m, err)
			}
			b.add(m.String()+"_cold_share", perS/alone)
			progress("round %d cold %s: %.0f/s beside the hot key, %.2f of alone", round+1, m, perS, perS/alone)
		}
	}
	if on["parked"] {
		if err := b.parkedRound(ctx, round); err != nil {
			return fmt.Errorf("parked: %w", err)
		}
	}
	for _, m := range ms {
		if m == modeBare {
			continue // no lock: the hot key is not serialized
		}
		for _, s := range []struct {
			name string
			n    int
			hold time.Duration
		}{{"hot", b.cfg.hot, b.cfg.hold}, {"hotlong", b.cfg.hotLong, b.cfg.holdLong}} {
			if !on[s.name] {
				continue
			}
			name := s.name
			err := b.hotOnly(ctx, m, s.n, s.hold, func(ratio float64) {
				b.add(m.String()+"_"+name+"_vs_ideal", ratio)
				progress("round %d %s %s: %.2fx the serial ideal", round+1, name, m, ratio)
			})
			if err != nil {
				return fmt.Errorf("%s, %s: %w", s.name, m, err)
			}
		}
	}
	if on["flash"] {
		for _, m := range ms {
			err := b.flash(ctx, m, b.cfg.sale, func(s sale) {
				b.add(m.String()+"_flash_sold_per_s", s.perS)
				b.add(m.String()+"_flash_p99_ms", s.p99ms)
				b.add(m.String()+"_flash_lost", float64(s.lost))
				verdict := b.checkSale(m, round, s)
				progress("round %d flash %s: %d sold, %.0f/s, p99 %.0f ms, %s", round+1, m, s.sold, s.perS, s.p99ms, verdict)
			})
			if err != nil {
				return fmt.Errorf("flash, %s: %w", m, err)
			}
		}
	}
	return nil
}

// fewParked is the parked scenario's small case, whose wake cost a wake
// with -parked tasks parked must match.
const fewParked = 100

// checkSale checks that a flash sale's final stock is its start minus its
// sales. A locked mode that lost an update fails the run; bare asynq is
// expected to lose some, which is what the check is there to see.
func (b *bench) checkSale(m mode, round int, s sale) (verdict string) {
	if s.exact {
		return "exact"
	}
	if m != modeBare {
		b.fail(fmt.Sprintf("FAIL: flash sale, %s, round %d: final stock %d, want %d - %d sold = %d (%d updates lost)",
			m, round+1, s.final, s.start, s.sold, s.start-s.sold, s.lost))
	}
	return fmt.Sprintf("LOST %d updates", s.lost)
}

func (b *bench) parkedRound(ctx context.Context, round int) error {
	pending, err := b.pendingBytes(ctx, b.cfg.parked)
	if err != nil {
		return err
	}
	b.add("pending_bytes_per_task", pending)
	for _, c := range []struct {
		name string
		n    int
	}{{"parked_few", fewParked}, {"parked_many", b.cfg.parked}} {
		n, name := c.n, c.name
		p, err := b.parked(ctx, n, b.cfg.wakes)
		if err != nil {
			return err
		}
		b.add(name+"_bytes_per_task", p.bytesPerTask)
		b.add(name+"_in_list", float64(p.inList))
		b.add(name+"_wake_redis_cpu_us", p.wakeRedisUS)
		b.add(name+"_wake_ms", p.wakeMS)
		progress("round %d parked %d: %.0f bytes per task (%d in the list), a wake %.0f µs Redis CPU, %.2f ms",
			round+1, n, p.bytesPerTask, p.inList, p.wakeRedisUS, p.wakeMS)
	}
	return nil
}

// profiled runs phase under the CPU profiler when -cpuprofile is set and
// on is true.
func (b *bench) profiled(on bool, run func() error) error {
	if !on || b.cfg.cpuProfile == "" {
		return run()
	}
	f, err := os.Create(b.cfg.cpuProfile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return errors.Join(err, f.Close())
	}
	err = run()
	pprof.StopCPUProfile()
	return errors.Join(err, f.Close())
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "workerbench: "+format+"\n", args...)
}
