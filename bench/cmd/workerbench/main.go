// Command workerbench measures what turnstile's worker costs over bare
// asynq, and how it copes with a hot key, in one run against a
// redis-server it starts on a free 127.0.0.1 port and kills when it exits.
//
//   - Throughput: -tasks no-op tasks on bare asynq, then the same tasks
//     behind the full middleware chain (recovery, tracing with the SDK,
//     unknown-type archiving, the lock guard), each on its own key.
//   - Hot key: -hot tasks on one key and -tasks on distinct keys, each
//     holding its key for -hold, enqueued at once in a shuffled order. The
//     cold tasks' throughput is compared with a run without the hot key,
//     and the time until the last hot task is done with the serial ideal:
//     -hot holds back to back in one goroutine, measured in the same run.
//
// The throughput phases also report the CPU time per task of this process
// (the worker) and of redis-server, which say where a lower throughput
// comes from on a machine whose cores the two share.
//
// Every phase runs -rounds times, interleaved, and the medians are
// reported. Usage, from the repository root or from bench/:
//
//	go run ./bench/cmd/workerbench [-rounds 3] [-json]
//
// With -json the last line of stdout is one JSON object:
// {"bare_per_s": N, "guarded_per_s": N, "guarded_ratio": R, "cold_ratio": R, "hot_vs_ideal": R,
// "bare_worker_cpu_us": N, "bare_redis_cpu_us": N, "guarded_worker_cpu_us": N, "guarded_redis_cpu_us": N}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/bench/internal/redisserver"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
	"github.com/turnstilehq/turnstile/worker"
)

const taskType = "bench:hold"

type config struct {
	tasks, hot, concurrency, rounds int
	hold                            time.Duration
	json                            bool
	redisServer, cpuProfile         string
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
	fs.IntVar(&c.tasks, "tasks", 5000, "tasks on distinct keys per phase")
	fs.IntVar(&c.hot, "hot", 500, "tasks on the hot key")
	fs.IntVar(&c.concurrency, "concurrency", 32, "the worker's concurrency")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of every phase; medians are reported")
	fs.DurationVar(&c.hold, "hold", 2*time.Millisecond, "how long a hot-key phase task holds its key")
	fs.BoolVar(&c.json, "json", false, "print the results as JSON on the last line")
	fs.StringVar(&c.redisServer, "redis-server", "redis-server", "the redis-server binary")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the guarded throughput phases to this file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.tasks < 1 || c.hot < 1 || c.concurrency < 1 || c.rounds < 1 {
		return c, errors.New("-tasks, -hot, -concurrency and -rounds must be positive")
	}
	return c, nil
}

// results are the medians over the rounds.
type results struct {
	BarePerS     float64 `json:"bare_per_s"`
	GuardedPerS  float64 `json:"guarded_per_s"`
	GuardedRatio float64 `json:"guarded_ratio"`
	ColdRatio    float64 `json:"cold_ratio"`
	HotVsIdeal   float64 `json:"hot_vs_ideal"`
	// CPU µs per task.
	BareWorkerCPU    float64 `json:"bare_worker_cpu_us"`
	BareRedisCPU     float64 `json:"bare_redis_cpu_us"`
	GuardedWorkerCPU float64 `json:"guarded_worker_cpu_us"`
	GuardedRedisCPU  float64 `json:"guarded_redis_cpu_us"`
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
	b := &bench{cfg: cfg, srv: srv, rdb: rdb, tel: tel}

	var bare, guarded []throughput
	var coldAlone, coldWithHot, hotRatio []float64
	for round := range cfg.rounds {
		t, err := b.throughput(ctx, false)
		if err != nil {
			return err
		}
		bare = append(bare, t)
		if t, err = b.profiled(round == 0, func() (throughput, error) { return b.throughput(ctx, true) }); err != nil {
			return err
		}
		guarded = append(guarded, t)
		alone, _, err := b.hotKey(ctx, 0)
		if err != nil {
			return err
		}
		coldAlone = append(coldAlone, alone)
		withHot, hotTime, err := b.hotKey(ctx, cfg.hot)
		if err != nil {
			return err
		}
		coldWithHot = append(coldWithHot, withHot)
		ideal := serialIdeal(cfg.hot, cfg.hold)
		hotRatio = append(hotRatio, hotTime.Seconds()/ideal.Seconds())
		progress("round %d: bare %s, guarded %s (%.2f); cold %.0f/s alone, %.0f/s beside the hot key (%.2f); hot key %s for an ideal %s (%.2fx)",
			round+1, bare[round], guarded[round], guarded[round].perS/bare[round].perS,
			alone, withHot, withHot/alone, hotTime.Round(time.Millisecond), ideal.Round(time.Millisecond), hotRatio[round])
	}
	r := results{
		BarePerS: medianOf(bare, throughput.rate), GuardedPerS: medianOf(guarded, throughput.rate),
		ColdRatio: ratioOfMedians(coldWithHot, coldAlone), HotVsIdeal: median(hotRatio),
		BareWorkerCPU: medianOf(bare, throughput.workerCPU), BareRedisCPU: medianOf(bare, throughput.redisCPU),
		GuardedWorkerCPU: medianOf(guarded, throughput.workerCPU), GuardedRedisCPU: medianOf(guarded, throughput.redisCPU),
	}
	r.GuardedRatio = r.GuardedPerS / r.BarePerS
	fmt.Printf("bare asynq        %8.0f tasks/s  cpu per task: worker %.0f µs, redis %.0f µs\n", r.BarePerS, r.BareWorkerCPU, r.BareRedisCPU)
	fmt.Printf("guarded           %8.0f tasks/s  cpu per task: worker %.0f µs, redis %.0f µs\n", r.GuardedPerS, r.GuardedWorkerCPU, r.GuardedRedisCPU)
	fmt.Printf("                  %8.2f of bare (target >= 0.9)\n", r.GuardedRatio)
	fmt.Printf("cold beside hot   %8.2f of cold alone (target >= 0.8)\n", r.ColdRatio)
	fmt.Printf("hot key           %8.2fx its serial ideal (target <= 1.5)\n", r.HotVsIdeal)
	if cfg.json {
		out, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Println(string(out))
	}
	return nil
}

type bench struct {
	cfg config
	srv *redisserver.Server
	rdb *redis.Client
	tel *telemetry.Providers
}

type payload struct {
	Key  string `json:"key"`
	Hold int64  `json:"hold_us"`
}

func keys(t *asynq.Task) ([]lock.Resource, error) {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return nil, &middleware.PayloadError{Field: "(body)", Problem: err.Error()}
	}
	return []lock.Resource{lock.Key("bench", p.Key)}, nil
}

// counter counts handled tasks and notes when the last of each kind ended.
type counter struct {
	hot, cold       atomic.Int64
	hotEnd, coldEnd atomic.Int64 // unix ns
}

func (c *counter) handler(wantHot, wantCold int64) asynq.HandlerFunc {
	return func(_ context.Context, t *asynq.Task) error {
		var p payload
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		if p.Hold > 0 {
			time.Sleep(time.Duration(p.Hold) * time.Microsecond)
		}
		if p.Key == "hot" {
			if c.hot.Add(1) == wantHot {
				c.hotEnd.Store(time.Now().UnixNano())
			}
		} else if c.cold.Add(1) == wantCold {
			c.coldEnd.Store(time.Now().UnixNano())
		}
		return nil
	}
}

// throughput is what one throughput phase measured.
type throughput struct {
	perS          float64
	worker, redis time.Duration // CPU per task
}

func (t throughput) rate() float64      { return t.perS }
func (t throughput) workerCPU() float64 { return float64(t.worker) / float64(time.Microsecond) }
func (t throughput) redisCPU() float64  { return float64(t.redis) / float64(time.Microsecond) }

func (t throughput) String() string {
	return fmt.Sprintf("%.0f/s (cpu per task: worker %.0f µs, redis %.0f µs)", t.perS, t.workerCPU(), t.redisCPU())
}

// throughput runs cfg.tasks no-op tasks on distinct keys, bare or behind
// the worker's middleware chain.
func (b *bench) throughput(ctx context.Context, guarded bool) (throughput, error) {
	tasks := make([]payload, b.cfg.tasks)
	for i := range tasks {
		tasks[i] = payload{Key: "k" + strconv.Itoa(i)}
	}
	c := &counter{}
	ph, err := b.process(ctx, tasks, c.handler(0, int64(len(tasks))), guarded, func() bool { return c.cold.Load() == int64(len(tasks)) })
	if err != nil {
		return throughput{}, err
	}
	n := time.Duration(len(tasks))
	return throughput{
		perS:   float64(len(tasks)) / time.Duration(c.coldEnd.Load()-ph.start.UnixNano()).Seconds(),
		worker: ph.workerCPU / n,
		redis:  ph.redisCPU / n,
	}, nil
}

// hotKey runs cfg.tasks cold tasks and hot tasks on one key, guarded, each
// holding its key for cfg.hold, and returns the cold tasks' throughput and
// the time until the last hot task was done.
func (b *bench) hotKey(ctx context.Context, hot int) (float64, time.Duration, error) {
	hold := b.cfg.hold.Microseconds()
	tasks := make([]payload, 0, b.cfg.tasks+hot)
	for i := range b.cfg.tasks {
		tasks = append(tasks, payload{Key: "k" + strconv.Itoa(i), Hold: hold})
	}
	for range hot {
		tasks = append(tasks, payload{Key: "hot", Hold: hold})
	}
	//nolint:gosec // G404: a fixed seed, so that every round and run shuffles alike.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(tasks), func(i, j int) { tasks[i], tasks[j] = tasks[j], tasks[i] })
	c := &counter{}
	wantCold := int64(b.cfg.tasks)
	ph, err := b.process(ctx, tasks, c.handler(int64(hot), wantCold), true, func() bool {
		return c.cold.Load() == wantCold && c.hot.Load() == int64(hot)
	})
	if err != nil {
		return 0, 0, err
	}
	cold := float64(wantCold) / time.Duration(c.coldEnd.Load()-ph.start.UnixNano()).Seconds()
	return cold, time.Duration(c.hotEnd.Load() - ph.start.UnixNano()), nil
}

// phaseTimeout bounds one phase; a guard that lost wake-ups would hang.
const phaseTimeout = 5 * time.Minute

// phase is when a server started on a phase's tasks and the CPU time the
// worker process and redis-server used until they were done.
type phase struct {
	start               time.Time
	workerCPU, redisCPU time.Duration
}

// process empties Redis, enqueues tasks, starts a server (bare or the
// worker) and waits until done reports true.
func (b *bench) process(ctx context.Context, tasks []payload, h asynq.HandlerFunc, guarded bool, done func() bool) (phase, error) {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil { // our own server
		return phase{}, err
	}
	if err := b.enqueue(ctx, tasks); err != nil {
		return phase{}, err
	}
	cfg := worker.DefaultConfig()
	cfg.Concurrency = b.cfg.concurrency
	cfg.Queues = map[string]int{"default": 1}
	cfg.ShutdownTimeout = 10 * time.Second
	var (
		startFn    func() error
		shutdownFn func(context.Context) error
	)
	if guarded {
		w, err := worker.New(worker.Params{
			Config: cfg, Redis: b.rdb, Logger: slog.New(slog.DiscardHandler),
			TracerProvider: b.tel.TracerProvider(), MeterProvider: b.tel.MeterProvider(),
			TaskTypes: []worker.TaskType{{Type: taskType, Handler: h, Keys: keys}},
		})
		if err != nil {
			return phase{}, err
		}
		startFn, shutdownFn = w.Start, w.Shutdown
	} else {
		srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{
			Concurrency: cfg.Concurrency, Queues: cfg.Queues, TaskCheckInterval: cfg.PollInterval,
			DelayedTaskCheckInterval: worker.DelayedTaskCheckInterval, ShutdownTimeout: cfg.ShutdownTimeout,
			LogLevel: asynq.FatalLevel,
		})
		mux := asynq.NewServeMux()
		mux.Handle(taskType, h)
		startFn = func() error { return srv.Start(mux) }
		shutdownFn = func(context.Context) error { srv.Shutdown(); return nil }
	}
	redis0, err := b.srv.CPU(ctx)
	if err != nil {
		return phase{}, err
	}
	ph := phase{start: time.Now()}
	worker0 := processCPU()
	if err := startFn(); err != nil {
		return phase{}, err
	}
	deadline := time.After(phaseTimeout)
	for !done() {
		select {
		case <-ctx.Done():
			return phase{}, errors.Join(context.Cause(ctx), shutdownFn(context.WithoutCancel(ctx)))
		case <-deadline:
			return phase{}, errors.Join(fmt.Errorf("phase not done after %s", phaseTimeout), shutdownFn(context.WithoutCancel(ctx)))
		case <-time.After(time.Millisecond):
		}
	}
	ph.workerCPU = processCPU() - worker0
	redis1, err := b.srv.CPU(ctx)
	ph.redisCPU = redis1 - redis0
	return ph, errors.Join(err, shutdownFn(ctx))
}

// enqueue enqueues tasks from a few goroutines; it is not measured.
func (b *bench) enqueue(ctx context.Context, tasks []payload) error {
	client := asynq.NewClientFromRedisClient(b.rdb)
	opts := []asynq.Option{asynq.MaxRetry(5), asynq.Timeout(30 * time.Second)}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		mu   sync.Mutex
		errs []error
	)
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(tasks)); i = next.Add(1) - 1 {
				body, err := json.Marshal(tasks[i])
				if err == nil {
					_, err = client.EnqueueContext(ctx, asynq.NewTask(taskType, body), opts...)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// profiled runs phase under the CPU profiler when -cpuprofile is set and
// on is true.
func (b *bench) profiled(on bool, run func() (throughput, error)) (throughput, error) {
	if !on || b.cfg.cpuProfile == "" {
		return run()
	}
	f, err := os.Create(b.cfg.cpuProfile)
	if err != nil {
		return throughput{}, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return throughput{}, errors.Join(err, f.Close())
	}
	v, err := run()
	pprof.StopCPUProfile()
	return v, errors.Join(err, f.Close())
}

// serialIdeal is n holds of d back to back in one goroutine: what one key
// can do at best, with this machine's sleep overshoot.
func serialIdeal(n int, d time.Duration) time.Duration {
	start := time.Now()
	for range n {
		time.Sleep(d)
	}
	return time.Since(start)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratioOfMedians(a, b []float64) float64 { return median(a) / median(b) }

func medianOf[T any](xs []T, f func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	return median(vs)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "workerbench: "+format+"\n", args...)
}
