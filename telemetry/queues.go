package telemetry

import (
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// Queue metrics under the names asynq's x/metrics uses, so its dashboards
// and alerts work unchanged.
var (
	queueStateDesc = prometheus.NewDesc("asynq_tasks_enqueued_total",
		"Number of tasks enqueued; broken down by queue and state.", []string{"queue", "state"}, nil)
	queueSizeDesc = prometheus.NewDesc("asynq_queue_size",
		"Number of tasks in a queue", []string{"queue"}, nil)
	queueLatencyDesc = prometheus.NewDesc("asynq_queue_latency_seconds",
		"Number of seconds the oldest pending task is waiting in pending state to be processed.", []string{"queue"}, nil)
	queueMemoryDesc = prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes",
		"Number of memory used by a given queue (approximated number by sampling).", []string{"queue"}, nil)
	queueProcessedDesc = prometheus.NewDesc("asynq_tasks_processed_total",
		"Number of tasks processed (both succeeded and failed); broken down by queue", []string{"queue"}, nil)
	queueFailedDesc = prometheus.NewDesc("asynq_tasks_failed_total",
		"Number of tasks failed; broken down by queue", []string{"queue"}, nil)
	queuePausedDesc = prometheus.NewDesc("asynq_queue_paused_total",
		"Number of queues paused", []string{"queue"}, nil)
)

// QueueCollector is a prometheus.Collector of asynq's queue metrics for the
// queues a worker serves. asynq's GetQueueInfo samples memory and scans
// its lists, so it runs at most once per TTL however often Prometheus
// scrapes, and only for these queues, not every queue in Redis.
type QueueCollector struct {
	inspect *asynq.Inspector
	queues  []string
	ttl     time.Duration
	now     func() time.Time

	mu    sync.Mutex
	read  time.Time
	infos []*asynq.QueueInfo
}

// NewQueueCollector returns a QueueCollector of queues, read through
// inspect at most once per ttl.
func NewQueueCollector(inspect *asynq.Inspector, queues []string, ttl time.Duration) *QueueCollector {
	return &QueueCollector{inspect: inspect, queues: queues, ttl: ttl, now: time.Now}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueStateDesc, queueSizeDesc, queueLatencyDesc, queueMemoryDesc, queueProcessedDesc, queueFailedDesc, queuePausedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, in := range c.current() {
		q := in.Queue
		for state, n := range map[string]int{
			"active": in.Active, "pending": in.Pending, "scheduled": in.Scheduled,
			"retry": in.Retry, "archived": in.Archived, "completed": in.Completed,
		} {
			gauge(queueStateDesc, float64(n), q, state)
		}
		gauge(queueSizeDesc, float64(in.Size), q)
		gauge(queueLatencyDesc, in.Latency.Seconds(), q)
		gauge(queueMemoryDesc, float64(in.MemoryUsage), q)
		ch <- prometheus.MustNewConstMetric(queueProcessedDesc, prometheus.CounterValue, float64(in.ProcessedTotal), q)
		ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(in.FailedTotal), q)
		paused := 0.0
		if in.Paused {
			paused = 1
		}
		gauge(queuePausedDesc, paused, q)
	}
}

// current returns the cached infos, read again when older than the TTL.
// A queue that has never held a task is not in Redis yet and is skipped.
func (c *QueueCollector) current() []*asynq.QueueInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.infos == nil || now.Sub(c.read) >= c.ttl {
		infos := make([]*asynq.QueueInfo, 0, len(c.queues))
		for _, q := range c.queues {
			if in, err := c.inspect.GetQueueInfo(q); err == nil {
				infos = append(infos, in)
			}
		}
		c.infos, c.read = infos, now
	}
	return c.infos
}
