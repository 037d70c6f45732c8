// Command fleetbench measures a fleet of `turnstile worker` processes: how
// its throughput grows with the number of processes, on one redis-server
// and on a Redis Cluster of three masters, both started by fleetbench on
// free 127.0.0.1 ports and killed by pid when it exits.
//
// It builds ./cmd/turnstile once and, for each backend, fleet size
// (-workers) and key pattern, starts the workers from an empty Redis and
// acts as the shop's producer: it checks orders out in process
// (jobs.Service.Reserve) and enqueues the demo's job mix (jobs.NewTask and
// an asynq.Client):
//
//   - distinct: one order per task: payment webhooks (30 % sent twice),
//     revokes of unpaid orders, full refunds of paid ones.
//   - hot: every task on one of -hot-orders paid orders: repeated
//     webhooks and revokes (no-ops under the order's lock) and one-cent
//     refunds (a commit, the gateway's 20 ms latency under the lock).
//
// Each round enqueues -tasks (or -hot-tasks) while the queues are paused
// and times the fleet from their release until asynq counts them
// processed: tasks/s, and the CPU the workers (/proc/<pid>/stat) and each
// Redis node (INFO cpu) used per task. Efficiency is tasks/s with N
// workers over N times tasks/s with one. Then a latency phase enqueues at
// -latency-load of that rate for -latency-for and reports p50 and p99
// from the start of a task's enqueue to its handler's commit, read back
// from the notification the commit writes (tasks that commit nothing,
// duplicates and no-op revokes, are counted but not timed). jobs.Check
// must then find every invariant intact, or the run fails.
//
// Last, the memory step checks out -orders-for-memory orders, pays 85 %
// of them in process, has the workers run every revoke, and reports Redis memory (used_memory) and
// keys (DBSIZE) per order, per node.
//
// Usage, from the repository root or from bench/:
//
//	go run ./bench/cmd/fleetbench [-workers 1,2,4] [-backends single,cluster] [-rounds 3] [-json]
//
// With -json the last line of stdout is one JSON object holding every
// figure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	workers                        []int
	backends, patterns             []string
	tasks, hotTasks, hotOrders     int
	rounds, concurrency, masters   int
	ordersForMemory, memoryWorkers int
	memoryBackend                  string
	latencyLoad                    float64
	latencyFor, timeout            time.Duration
	seed                           uint64
	json                           bool
	redisServer, redisCLI          string
	// turnstile, when set, is a turnstile binary to run instead of one
	// built from the working tree.
	turnstile string
}

func main() {
	if err := runMain(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	var c config
	var workers, backends, patterns string
	fs.StringVar(&workers, "workers", "1,2,4", "fleet sizes: worker processes")
	fs.StringVar(&backends, "backends", "single,cluster", "single (one redis-server), cluster (3 masters)")
	fs.StringVar(&patterns, "patterns", "distinct,hot", "key patterns: distinct (one order per task), hot (few orders)")
	fs.IntVar(&c.tasks, "tasks", 2000, "tasks per round, distinct keys")
	fs.IntVar(&c.hotTasks, "hot-tasks", 1000, "tasks per round, hot keys")
	fs.IntVar(&c.hotOrders, "hot-orders", 8, "orders the hot tasks share")
	fs.IntVar(&c.rounds, "rounds", 3, "backlogs per configuration; medians are reported")
	fs.IntVar(&c.concurrency, "concurrency", 64, "each worker's TURNSTILE_CONCURRENCY (its jobs wait 20 ms on the gateway)")
	fs.IntVar(&c.masters, "masters", 3, "the cluster's masters")
	fs.IntVar(&c.ordersForMemory, "orders-for-memory", 100_000, "orders of the memory step; 0 skips it")
	fs.IntVar(&c.memoryWorkers, "memory-workers", 2, "workers of the memory step")
	fs.StringVar(&c.memoryBackend, "memory-backend", "", "backend of the memory step (default: cluster if run, else single)")
	fs.Float64Var(&c.latencyLoad, "latency-load", 0.5, "the latency phase's rate, as a share of the drain rate")
	fs.DurationVar(&c.latencyFor, "latency-for", 2*time.Second, "how long the latency phase enqueues")
	fs.DurationVar(&c.timeout, "timeout", 3*time.Minute, "the longest a phase may take to be processed")
	fs.Uint64Var(&c.seed, "seed", 1, "seeds the job mix")
	fs.BoolVar(&c.json, "json", false, "print every figure as JSON on the last line")
	fs.StringVar(&c.redisServer, "redis-server", "redis-server", "the redis-server binary")
	fs.StringVar(&c.redisCLI, "redis-cli", "redis-cli", "the redis-cli binary, for the cluster")
	fs.StringVar(&c.turnstile, "turnstile", "", "a turnstile binary to run (default: go build ./cmd/turnstile); it must share this tree's ledger layout")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for w := range strings.SplitSeq(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return c, fmt.Errorf("-workers: %q is not a positive number", w)
		}
		c.workers = append(c.workers, n)
	}
	var err error
	if c.backends, err = names("-backends", backends, "single", "cluster"); err != nil {
		return c, err
	}
	if c.patterns, err = names("-patterns", patterns, patternDistinct, patternHot); err != nil {
		return c, err
	}
	if min(c.tasks, c.hotTasks, c.hotOrders, c.rounds, c.concurrency, c.memoryWorkers) < 1 || c.ordersForMemory < 0 {
		return c, errors.New("-tasks, -hot-tasks, -hot-orders, -rounds, -concurrency and -memory-workers must be positive")
	}
	if !(c.latencyLoad > 0 && c.latencyLoad <= 1) || c.latencyFor <= 0 {
		return c, errors.New("-latency-load must be in (0, 1] and -latency-for positive")
	}
	if c.memoryBackend == "" {
		c.memoryBackend = c.backends[len(c.backends)-1]
	}
	if c.ordersForMemory > 0 && !slices.Contains(c.backends, c.memoryBackend) {
		return c, fmt.Errorf("-memory-backend %q is not among -backends", c.memoryBackend)
	}
	return c, nil
}

func names(flagName, list string, known ...string) ([]string, error) {
	var out []string
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("%s: unknown %q (have %s)", flagName, s, strings.Join(known, ","))
		}
		out = append(out, s)
	}
	return out, nil
}

type bench struct {
	cfg  config
	bin  string // the turnstile binary
	dir  string // its directory, and the workers' logs
	runs []result
	mem  *memory
}

func runMain(args []string, stdout io.Writer) (err error) {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(b.dir)) }() //nolint:gosec // G703: the temporary directory we made.
	if err := b.all(ctx); err != nil {
		return err
	}
	return b.report(stdout)
}

func newBench(ctx context.Context, cfg config) (*bench, error) {
	dir, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		return nil, err
	}
	if cfg.turnstile != "" {
		return &bench{cfg: cfg, bin: cfg.turnstile, dir: dir}, nil
	}
	began := time.Now()
	bin, err := build(ctx, dir)
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	progress("built %s in %s", bin, time.Since(began).Round(100*time.Millisecond))
	return &bench{cfg: cfg, bin: bin, dir: dir}, nil
}

// all runs every backend in turn, each started once and stopped by pid
// before the next.
func (b *bench) all(ctx context.Context) error {
	began := time.Now()
	for _, name := range b.cfg.backends {
		if err := b.onBackend(ctx, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	progress("done in %s", time.Since(began).Round(time.Second))
	return nil
}

func (b *bench) onBackend(ctx context.Context, name string) (err error) {
	var be *backend
	switch name {
	case "cluster":
		if _, lerr := exec.LookPath(b.cfg.redisCLI); lerr != nil {
			return fmt.Errorf("the cluster needs redis-cli: %w", lerr)
		}
		be, err = startCluster(ctx, b.cfg.redisServer, b.cfg.redisCLI, b.cfg.masters)
	default:
		be, err = startSingle(ctx, b.cfg.redisServer)
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, be.stop()) }()
	progress("%s: %s", name, be.url)
	for _, pattern := range b.cfg.patterns {
		for _, n := range b.cfg.workers {
			r, err := b.runConfig(ctx, be, n, pattern)
			if err != nil {
				return fmt.Errorf("%d worker(s), %s keys: %w", n, pattern, err)
			}
			b.runs = append(b.runs, r)
			progress("%s, %d worker(s), %s keys: %.0f tasks/s, p99 %.1f ms at %.0f/s, invariants OK (%d orders)",
				name, n, pattern, r.TasksPerS, r.P99ms, r.LatencyRate, r.Orders)
		}
	}
	if b.cfg.ordersForMemory > 0 && name == b.cfg.memoryBackend {
		mem, err := b.memoryStep(ctx, be)
		if err != nil {
			return fmt.Errorf("memory step: %w", err)
		}
		b.mem = &mem
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fleetbench: "+format+"\n", args...)
}
