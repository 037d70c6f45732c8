package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/internal/oteltest"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
)

// Raw IDs used below; none of them may reach a metric label.
const (
	tracingTaskType = "payment:refund"
	tracingOrderID  = "order-5d21e"
	tracingTaskID   = "refund:order-5d21e"
)

type tracingBundle struct {
	*oteltest.Recorder
	client *asynq.Client
}

func tracingSetup(t *testing.T) *tracingBundle {
	t.Helper()
	_, rdb := redistest.MiniClient(t)
	// No Close: asynq refuses to close a shared connection, and redistest
	// closes rdb when the test ends.
	return &tracingBundle{Recorder: oteltest.New(t), client: asynq.NewClientFromRedisClient(rdb)}
}

// enqueued enqueues a task through telemetry.Enqueue and returns the task
// as a worker would see it: rebuilt from what was stored, headers included.
func (b *tracingBundle) enqueued(t *testing.T) *asynq.Task {
	t.Helper()
	info, err := telemetry.Enqueue(t.Context(), b.TP, b.client,
		asynq.NewTask(tracingTaskType, []byte(`{"order_id":"`+tracingOrderID+`"}`)),
		asynq.Queue("payments"), asynq.TaskID(tracingTaskID))
	require.NoError(t, err)
	return asynq.NewTaskWithHeaders(info.Type, info.Payload, info.Headers)
}

// durations returns the messaging.process.duration points.
func (b *tracingBundle) durations(t *testing.T) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	return oteltest.Histogram(t, oteltest.Metric(t, b.Collect(t), telemetry.MetricProcessDuration))
}

func TestTracing_ProcessSpanIsChildAndLinkOfSend(t *testing.T) {
	t.Parallel()
	b := tracingSetup(t)
	task := b.enqueued(t)

	var seen trace.SpanContext
	h := middleware.Tracing(b.TP, b.MP)(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		seen = trace.SpanContextFromContext(ctx)
		require.Equal(t, tracingTaskType, telemetry.TaskType(ctx))
		return nil
	}))
	require.NoError(t, h.ProcessTask(t.Context(), task))

	send := b.Named("send " + tracingTaskType)
	process := b.Named("process " + tracingTaskType)
	require.Len(t, send, 1)
	require.Len(t, process, 1)
	p := process[0]
	require.Equal(t, trace.SpanKindConsumer, p.SpanKind)
	require.Equal(t, seen.SpanID(), p.SpanContext.SpanID(), "the handler runs inside the process span")
	require.Equal(t, send[0].SpanContext.TraceID(), p.SpanContext.TraceID())
	require.Equal(t, send[0].SpanContext.SpanID(), p.Parent.SpanID(), "parent is the send span")
	require.Len(t, p.Links, 1)
	require.Equal(t, send[0].SpanContext.SpanID(), p.Links[0].SpanContext.SpanID(), "link to the send span")
	require.Equal(t, codes.Unset, p.Status.Code)

	attrs := oteltest.Attrs(p.Attributes)
	require.Equal(t, "asynq", attrs["messaging.system"].AsString())
	require.Equal(t, "process", attrs["messaging.operation.name"].AsString())
	require.Equal(t, "process", attrs["messaging.operation.type"].AsString())
	require.Equal(t, tracingTaskType, attrs[telemetry.AttrTaskType].AsString())
	require.Equal(t, telemetry.OutcomeSuccess, attrs[telemetry.AttrOutcome].AsString())
}

func TestTracing_NoHeadersMeansRootWithoutLink(t *testing.T) {
	t.Parallel()
	b := tracingSetup(t)
	h := middleware.Tracing(b.TP, b.MP)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil }))
	require.NoError(t, h.ProcessTask(t.Context(), asynq.NewTask(tracingTaskType, nil)))

	process := b.Named("process " + tracingTaskType)
	require.Len(t, process, 1)
	require.False(t, process[0].Parent.IsValid())
	require.Empty(t, process[0].Links)
}

func TestTracing_Outcomes(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name      string
		err       error
		status    codes.Code
		outcome   string
		errorType bool
	}{
		{"Success", nil, codes.Unset, telemetry.OutcomeSuccess, false},
		{"ErrorSetsStatus", errors.New("gateway down"), codes.Error, telemetry.OutcomeError, true},
		{
			"BusyLeavesStatusUnset", fmt.Errorf("guard: %w", &lock.BusyError{Resource: lock.Key("order", tracingOrderID), TTL: time.Second}),
			codes.Unset, telemetry.OutcomeBusy, false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tracingSetup(t)
			h := middleware.Tracing(b.TP, b.MP)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return tc.err }))
			err := h.ProcessTask(t.Context(), b.enqueued(t))
			require.ErrorIs(t, err, tc.err, "the handler's error is returned as it is")

			process := b.Named("process " + tracingTaskType)
			require.Len(t, process, 1)
			require.Equal(t, tc.status, process[0].Status.Code)
			attrs := oteltest.Attrs(process[0].Attributes)
			require.Equal(t, tc.outcome, attrs[telemetry.AttrOutcome].AsString())
			_, hasType := attrs["error.type"]
			require.Equal(t, tc.errorType, hasType, "error.type present")

			points := b.durations(t)
			require.Len(t, points, 1)
			v, ok := points[0].Attributes.Value(telemetry.AttrOutcome)
			require.True(t, ok)
			require.Equal(t, tc.outcome, v.AsString())
			require.Equal(t, uint64(1), points[0].Count)
		})
	}

	t.Run("PanicIsRecordedAndRepanicked", func(t *testing.T) {
		t.Parallel()
		b := tracingSetup(t)
		h := middleware.Tracing(b.TP, b.MP)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { panic("nil order") }))
		require.PanicsWithValue(t, "nil order", func() { _ = h.ProcessTask(t.Context(), b.enqueued(t)) })

		process := b.Named("process " + tracingTaskType)
		require.Len(t, process, 1)
		require.Equal(t, codes.Error, process[0].Status.Code)
		attrs := oteltest.Attrs(process[0].Attributes)
		require.Equal(t, "panic", attrs["error.type"].AsString())
		require.Equal(t, telemetry.OutcomeError, attrs[telemetry.AttrOutcome].AsString())
		require.Len(t, process[0].Events, 1)
		require.Equal(t, "exception", process[0].Events[0].Name)
		require.Len(t, b.durations(t), 1)
	})
}

// TestTracing_RetriesOnAServer runs a real asynq server on miniredis: the
// first delivery fails, the retry succeeds, and each gets its own process
// span under the same send span, with the task ID, queue and retry count.
// Then no metric label may carry the task ID or the order ID.
func TestTracing_RetriesOnAServer(t *testing.T) {
	t.Parallel()
	b := tracingSetup(t)
	_, rdb := redistest.MiniClient(t)
	client := asynq.NewClientFromRedisClient(rdb)

	done := make(chan struct{})
	var calls atomic.Int32
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              1,
		Queues:                   map[string]int{"payments": 1},
		TaskCheckInterval:        20 * time.Millisecond,
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		LogLevel:                 asynq.FatalLevel,
		ShutdownTimeout:          time.Second,
	})
	mux := asynq.NewServeMux()
	mux.Use(middleware.Tracing(b.TP, b.MP))
	mux.HandleFunc(tracingTaskType, func(context.Context, *asynq.Task) error {
		if calls.Add(1) == 1 {
			return errors.New("gateway timeout")
		}
		close(done)
		return nil
	})
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)

	_, err := telemetry.Enqueue(t.Context(), b.TP, client,
		asynq.NewTask(tracingTaskType, []byte(`{"order_id":"`+tracingOrderID+`"}`)),
		asynq.Queue("payments"), asynq.TaskID(tracingTaskID), asynq.MaxRetry(3))
	require.NoError(t, err)

	select {
	case <-done:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the retry did not succeed within 10s")
	}
	// The span ends after the handler returns: wait for it, not a sleep.
	require.Eventually(t, func() bool { return len(b.Named("process "+tracingTaskType)) == 2 },
		5*time.Second, 10*time.Millisecond)

	send := b.Named("send " + tracingTaskType)
	require.Len(t, send, 1)
	process := b.Named("process " + tracingTaskType)
	for i, p := range process {
		require.Equal(t, send[0].SpanContext.SpanID(), p.Parent.SpanID(), "delivery %d", i)
		require.NotEqual(t, process[0].SpanContext.SpanID(), process[1].SpanContext.SpanID())
		attrs := oteltest.Attrs(p.Attributes)
		require.Equal(t, tracingTaskID, attrs["messaging.message.id"].AsString())
		require.Equal(t, "payments", attrs["messaging.destination.name"].AsString())
		require.Equal(t, int64(i), attrs[telemetry.AttrTaskRetryCount].AsInt64(), "delivery %d", i)
	}
	require.Equal(t, codes.Error, process[0].Status.Code)
	require.Equal(t, codes.Unset, process[1].Status.Code)

	points := b.durations(t)
	require.Len(t, points, 2, "one series per outcome")
	for _, dp := range points {
		for _, kv := range dp.Attributes.ToSlice() {
			require.Contains(t, []attribute.Key{telemetry.AttrTaskType, "messaging.destination.name", telemetry.AttrOutcome}, kv.Key)
			for _, raw := range []string{tracingTaskID, tracingOrderID} {
				require.NotContains(t, kv.Value.String(), raw, "label %s carries a raw ID", kv.Key)
			}
		}
	}
}
