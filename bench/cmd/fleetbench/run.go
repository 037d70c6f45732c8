package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// drain is one backlog let go at once: how fast the fleet got through it
// and what CPU it took.
type drain struct {
	tasks     int
	wall      time.Duration
	workerCPU time.Duration
	redisCPU  []time.Duration // per node
	// otherCPU is what the machine's cores did besides the workers,
	// Redis and fleetbench: other people's processes on a shared machine.
	otherCPU time.Duration
}

// cpuSnapshot is every CPU counter a drain reads, at one moment.
type cpuSnapshot struct {
	workers, self, machine time.Duration
	redis                  []time.Duration
}

func snapshot(ctx context.Context, be *backend, fleet []*workerProc) (c cpuSnapshot, err error) {
	if c.workers, err = workersCPU(fleet); err != nil {
		return c, err
	}
	if c.redis, err = be.cpu(ctx); err != nil {
		return c, err
	}
	if c.self, err = selfCPU(); err != nil {
		return c, err
	}
	c.machine, err = machineCPU()
	return c, err
}

// result is one configuration's figures: medians over its rounds.
type result struct {
	Backend string `json:"backend"`
	Pattern string `json:"pattern"`
	Workers int    `json:"workers"`
	// Tasks is how many tasks each round's backlog held.
	Tasks     int     `json:"tasks"`
	TasksPerS float64 `json:"tasks_per_s"`
	// Efficiency is TasksPerS over Workers times the one-worker run's.
	Efficiency float64 `json:"efficiency"`
	// WorkerCPUms and RedisCPUms are CPU milliseconds per task, all
	// workers and all nodes together; RedisCPUmsByNode per node.
	WorkerCPUms      float64   `json:"worker_cpu_ms_per_task"`
	RedisCPUms       float64   `json:"redis_cpu_ms_per_task"`
	RedisCPUmsByNode []float64 `json:"redis_cpu_ms_per_task_by_node"`
	// WorkerCores and RedisCores are the cores busy on average while the
	// backlog drained: what was left of the machine.
	WorkerCores float64 `json:"worker_cores"`
	RedisCores  float64 `json:"redis_cores"`
	// OtherCores is what other processes took meanwhile (/proc/stat).
	OtherCores float64 `json:"other_cores"`
	// The latency phase: LatencyTasks enqueued at LatencyRate per second,
	// half the drain rate by default; P50ms and P99ms from enqueue to the
	// handler's commit, over the LatencySampled tasks that commit one.
	LatencyRate    float64 `json:"latency_rate_per_s"`
	LatencyTasks   int     `json:"latency_tasks"`
	LatencySampled int     `json:"latency_sampled"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	InvariantsOK   bool    `json:"invariants_ok"`
	Orders         int     `json:"orders"`
	Violations     int     `json:"violations"`
}

// runConfig runs one backend, fleet size and key pattern from an empty
// Redis: cfg.rounds backlogs, then the latency phase, then the check.
func (b *bench) runConfig(ctx context.Context, be *backend, workers int, pattern string) (r result, err error) {
	r = result{Backend: be.name, Pattern: pattern, Workers: workers}
	if err := be.flush(ctx); err != nil {
		return r, err
	}
	s, err := openShop(ctx, be.url)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, s.close()) }()
	if err := s.addTicketTypes(ctx); err != nil {
		return r, err
	}
	fleet, err := startWorkers(ctx, b.bin, b.dir, be.url, workers, b.cfg.concurrency)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, stopWorkers(fleet)) }()

	m := &mix{
		shop: s, pattern: pattern, prefix: fmt.Sprintf("%s%d%s", be.name[:1], workers, pattern[:1]),
		rand: rand.New(rand.NewPCG(b.cfg.seed, uint64(workers))), hotOrders: b.cfg.hotOrders, //nolint:gosec // G404: a seeded workload, reproducible by -seed.
	}
	n := b.cfg.tasks
	if pattern == patternHot {
		n = b.cfg.hotTasks
	}
	var ds []drain
	for round := range b.cfg.rounds {
		d, err := b.drainOnce(ctx, be, s, fleet, m, n)
		if err != nil {
			return r, fmt.Errorf("round %d: %w", round+1, err)
		}
		ds = append(ds, d)
		progress("%s, %d worker(s), %s keys, round %d: %.0f tasks/s", be.name, workers, pattern, round+1, float64(d.tasks)/d.wall.Seconds())
	}
	r.Tasks = n
	r.summarize(ds)

	if err := b.latencyPhase(ctx, s, m, &r); err != nil {
		return r, fmt.Errorf("latency: %w", err)
	}
	if err := s.leftOver(); err != nil {
		return r, err
	}
	rep, err := s.check(ctx)
	if err != nil {
		return r, fmt.Errorf("check invariants: %w", err)
	}
	r.InvariantsOK, r.Orders, r.Violations = rep.OK, rep.Orders, len(rep.Violations)
	if !rep.OK {
		return r, fmt.Errorf("invariants violated: %+v", rep.Violations[:min(5, len(rep.Violations))])
	}
	return r, nil
}

// drainOnce enqueues n tasks while the queues are paused, lets them go,
// and times the fleet from then until asynq has counted n processed.
func (b *bench) drainOnce(ctx context.Context, be *backend, s *shop, fleet []*workerProc, m *mix, n int) (drain, error) {
	js, err := m.batch(ctx, n)
	if err != nil {
		return drain{}, err
	}
	if err := s.pause(); err != nil {
		return drain{}, err
	}
	if _, err := s.enqueue(ctx, js, nil); err != nil {
		return drain{}, errors.Join(err, s.unpause())
	}
	base, err := s.processed(ctx)
	if err != nil {
		return drain{}, errors.Join(err, s.unpause())
	}
	c0, err := snapshot(ctx, be, fleet)
	if err != nil {
		return drain{}, errors.Join(err, s.unpause())
	}
	began := time.Now()
	if err := s.unpause(); err != nil {
		return drain{}, err
	}
	done, err := s.awaitProcessed(ctx, base, int64(len(js)), b.cfg.timeout)
	if err != nil {
		return drain{}, err
	}
	c1, err := snapshot(ctx, be, fleet)
	if err != nil {
		return drain{}, err
	}
	d := drain{tasks: len(js), wall: done.Sub(began), workerCPU: c1.workers - c0.workers}
	d.otherCPU = c1.machine - c0.machine - d.workerCPU - (c1.self - c0.self)
	for i := range c1.redis {
		d.redisCPU = append(d.redisCPU, c1.redis[i]-c0.redis[i])
		d.otherCPU -= c1.redis[i] - c0.redis[i]
	}
	return d, nil
}

// summarize sets the run's rate and CPU figures to the medians of its
// rounds.
func (r *result) summarize(ds []drain) {
	var rates, wms, rms, wcores, rcores, ocores []float64
	byNode := make([][]float64, len(ds[0].redisCPU))
	for _, d := range ds {
		n := float64(d.tasks)
		rates = append(rates, n/d.wall.Seconds())
		wms = append(wms, ms(d.workerCPU)/n)
		wcores = append(wcores, d.workerCPU.Seconds()/d.wall.Seconds())
		var total time.Duration
		for i, c := range d.redisCPU {
			total += c
			byNode[i] = append(byNode[i], ms(c)/n)
		}
		rms = append(rms, ms(total)/n)
		rcores = append(rcores, total.Seconds()/d.wall.Seconds())
		ocores = append(ocores, max(0, d.otherCPU.Seconds()/d.wall.Seconds()))
	}
	r.TasksPerS, r.WorkerCPUms, r.RedisCPUms = median(rates), median(wms), median(rms)
	r.WorkerCores, r.RedisCores, r.OtherCores = median(wcores), median(rcores), median(ocores)
	r.RedisCPUmsByNode = make([]float64, len(byNode))
	for i, v := range byNode {
		r.RedisCPUmsByNode[i] = median(v)
	}
}

// latencyPhase enqueues tasks at a steady cfg.latencyLoad of the drain
// rate for cfg.latencyFor, waits until they are processed, and reads
// each committing task's time from enqueue to commit back from the
// notification its handler wrote (the workers and fleetbench share this
// machine's clock).
func (b *bench) latencyPhase(ctx context.Context, s *shop, m *mix, r *result) error {
	rate := b.cfg.latencyLoad * r.TasksPerS
	n := max(1, int(rate*b.cfg.latencyFor.Seconds()))
	js, err := m.batch(ctx, n)
	if err != nil {
		return err
	}
	base, err := s.processed(ctx)
	if err != nil {
		return err
	}
	start := time.Now().Add(10 * time.Millisecond)
	every := time.Duration(float64(time.Second) / rate)
	began, err := s.enqueue(ctx, js, func(i int) time.Time { return start.Add(time.Duration(i) * every) })
	if err != nil {
		return err
	}
	if _, err := s.awaitProcessed(ctx, base, int64(len(js)), b.cfg.timeout); err != nil {
		return err
	}
	lat, missing, err := s.latencies(ctx, js, began)
	if err != nil {
		return err
	}
	if missing > 0 {
		return fmt.Errorf("%d processed tasks left no notification", missing)
	}
	r.LatencyRate, r.LatencyTasks, r.LatencySampled = rate, len(js), len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50ms, r.P99ms = ms(quantile(lat, 0.50)), ms(quantile(lat, 0.99))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile is the q-quantile of sorted ds, nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
