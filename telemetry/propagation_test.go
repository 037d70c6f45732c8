package telemetry

import (
	"context"
	"errors"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/internal/oteltest"
	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestInjectExtract(t *testing.T) {
	t.Parallel()

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ctx, span := b.TP.Tracer("test").Start(t.Context(), "producer")
		defer span.End()

		headers := map[string]string{"x-other": "kept"}
		Inject(ctx, headers)
		require.Contains(t, headers["traceparent"], span.SpanContext().TraceID().String())
		require.Equal(t, "kept", headers["x-other"])

		got := trace.SpanContextFromContext(Extract(context.Background(), headers))
		require.True(t, got.IsRemote())
		require.Equal(t, span.SpanContext().TraceID(), got.TraceID())
		require.Equal(t, span.SpanContext().SpanID(), got.SpanID())
	})

	t.Run("SpanContextFromHeadersIgnoresCtxSpan", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ctx, running := b.TP.Tracer("test").Start(t.Context(), "running")
		defer running.End()
		require.False(t, SpanContextFromHeaders(ctx, nil).IsValid())
		require.False(t, SpanContextFromHeaders(ctx, map[string]string{"traceparent": "garbage"}).IsValid())

		pctx, producer := b.TP.Tracer("test").Start(t.Context(), "producer")
		producer.End()
		headers := map[string]string{}
		Inject(pctx, headers)
		require.Equal(t, producer.SpanContext().SpanID(), SpanContextFromHeaders(ctx, headers).SpanID())
	})

	t.Run("NoHeaders", func(t *testing.T) {
		t.Parallel()
		require.False(t, trace.SpanContextFromContext(Extract(t.Context(), nil)).IsValid())
		require.False(t, trace.SpanContextFromContext(Extract(t.Context(), map[string]string{"traceparent": "garbage"})).IsValid())
	})
}

func TestEnqueue(t *testing.T) {
	t.Parallel()

	setupClient := func(t *testing.T) *asynq.Client {
		t.Helper()
		_, rdb := redistest.MiniClient(t)
		// No Close: asynq refuses to close a shared connection, and
		// redistest closes rdb when the test ends.
		return asynq.NewClientFromRedisClient(rdb)
	}

	t.Run("ProducerSpanInHeaders", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		client := setupClient(t)
		task := asynq.NewTaskWithHeaders(testTask, []byte(`{"order_id":"`+testOrderID+`"}`), map[string]string{"x-request-id": "r1"})

		info, err := Enqueue(t.Context(), b.TP, client, task, asynq.Queue("payments"), asynq.TaskID("refund:"+testOrderID))
		require.NoError(t, err)
		require.Equal(t, "payments", info.Queue)
		require.Equal(t, "refund:"+testOrderID, info.ID)
		// The caller's task is untouched; the enqueued one has both headers.
		require.Equal(t, map[string]string{"x-request-id": "r1"}, task.Headers())
		require.Equal(t, "r1", info.Headers["x-request-id"])
		require.Contains(t, info.Headers, "traceparent")
		require.NotContains(t, string(info.Payload), "traceparent", "trace context goes in headers, never the payload")

		s := b.Span(t, SpanSendPrefix+testTask)
		require.Equal(t, trace.SpanKindProducer, s.SpanKind)
		require.Equal(t, codes.Unset, s.Status.Code)
		created := trace.SpanContextFromContext(Extract(context.Background(), info.Headers))
		require.Equal(t, s.SpanContext.SpanID(), created.SpanID(), "traceparent names the send span")
		attrs := oteltest.Attrs(s.Attributes)
		for k, v := range map[attribute.Key]string{
			"messaging.system":           "asynq",
			"messaging.operation.name":   "send",
			"messaging.operation.type":   "send",
			"messaging.destination.name": "payments",
			"messaging.message.id":       "refund:" + testOrderID,
			AttrTaskType:                 testTask,
		} {
			require.Equal(t, v, attrs[k].AsString(), "attribute %s", k)
		}
	})

	t.Run("ErrorSetsStatus", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		client := setupClient(t)
		task := asynq.NewTask(testTask, nil)

		_, err := Enqueue(t.Context(), b.TP, client, task, asynq.TaskID("dup"))
		require.NoError(t, err)
		_, err = Enqueue(t.Context(), b.TP, client, task, asynq.TaskID("dup"))
		require.ErrorIs(t, err, asynq.ErrTaskIDConflict)

		spans := b.Spans.GetSpans()
		require.Len(t, spans, 2)
		require.Equal(t, codes.Unset, spans[0].Status.Code)
		require.Equal(t, codes.Error, spans[1].Status.Code)
		require.NotEmpty(t, oteltest.Attrs(spans[1].Attributes)["error.type"].AsString())
	})

	t.Run("RefusesTaskOwnOptions", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		_, err := Enqueue(t.Context(), b.TP, setupClient(t), asynq.NewTask(testTask, nil, asynq.MaxRetry(1)))
		require.ErrorIs(t, err, ErrTaskOptions)
		require.Empty(t, b.Spans.GetSpans())
	})

	t.Run("DefaultQueue", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "default", queueOption(nil))
		require.Equal(t, "b", queueOption([]asynq.Option{asynq.Queue("a"), asynq.MaxRetry(2), asynq.Queue("b")}))
	})
}

func TestIsFlowControl(t *testing.T) {
	t.Parallel()
	require.False(t, IsFlowControl(nil))
	require.False(t, IsFlowControl(errors.New("boom")))
	require.True(t, IsFlowControl(&lockBusy))
	require.Equal(t, OutcomeBusy, Outcome(&lockBusy))
	require.Equal(t, OutcomeError, Outcome(errors.New("boom")))
	require.Equal(t, OutcomeSuccess, Outcome(nil))
}
