package telemetry

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestQueueCollector(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	client := asynq.NewClientFromRedisClient(rdb)
	enqueue := func(queue string) {
		_, err := client.Enqueue(asynq.NewTask("test:x", nil), asynq.Queue(queue))
		require.NoError(t, err)
	}
	enqueue("default")
	enqueue("default")
	enqueue("elsewhere") // a queue this worker does not serve

	now := time.Unix(1000, 0)
	c := NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), []string{"default", "never-used"}, 10*time.Second)
	c.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))

	size := func() float64 {
		t.Helper()
		fams, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					require.NotEqual(t, "elsewhere", l.GetValue(), "an unserved queue was read")
				}
				if f.GetName() == "asynq_queue_size" {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no asynq_queue_size")
		return 0
	}
	require.InDelta(t, 2.0, size(), 0)
	require.Equal(t, 1, testutil.CollectAndCount(c, "asynq_queue_size"), "one series per served queue that exists")

	enqueue("default")
	require.InDelta(t, 2.0, size(), 0, "scrapes within the TTL are served from the cache")
	now = now.Add(10 * time.Second)
	require.InDelta(t, 3.0, size(), 0, "after the TTL the queues are read again")
}
