package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/telemetry"
)

// tracingScopeName is the instrumentation scope of the Tracing middleware.
const tracingScopeName = "github.com/turnstilehq/turnstile/middleware"

// tracingProcessBuckets are the semantic conventions' advisory boundaries
// for messaging.process.duration, extended to a minute for slow handlers.
var tracingProcessBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}

// Tracing returns a middleware that runs each delivery of a task inside a
// CONSUMER span named "process <task type>" and records its duration in
// the messaging.process.duration histogram (seconds).
//
// The span's parent is the creation context the producer put in the task
// headers (telemetry.Enqueue), and the span also links to it. Every
// delivery, retries included, gets its own span, with the retry count, task
// ID and queue as attributes. The context passed on carries the span and
// the task type (telemetry.TaskType), which the lock observer uses as a
// metric label.
//
// A handler error sets the span status to Error and error.type, except a
// flow-control error (telemetry.IsFlowControl: a busy lock), which leaves
// the status unset. A panic is recorded with its stack and error.type
// "panic", and then re-panicked for the recovery middleware outside this
// one. The histogram's labels are the task type, the queue and the outcome
// (telemetry.Outcome), never the task ID.
//
// Nil tp or mp mean the otel globals.
func Tracing(tp trace.TracerProvider, mp metric.MeterProvider) asynq.MiddlewareFunc {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	tracer := tp.Tracer(tracingScopeName)
	duration, err := mp.Meter(tracingScopeName).Float64Histogram(telemetry.MetricProcessDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time a task handler took, per delivery."),
		metric.WithExplicitBucketBoundaries(tracingProcessBuckets...))
	if err != nil {
		// The instrument returned with the error still works (no-op at
		// worst); a constant name cannot fail on the SDK.
		otel.Handle(err)
	}
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			return tracingProcess(ctx, tracer, duration, next, t)
		})
	}
}

func tracingProcess(ctx context.Context, tracer trace.Tracer, duration metric.Float64Histogram, next asynq.Handler, t *asynq.Task) (err error) {
	start := time.Now()
	taskType := t.Type()
	// Outside an asynq server (tests, direct calls) these are absent; the
	// zero values are still valid attributes.
	queue, _ := asynq.GetQueueName(ctx)
	taskID, _ := asynq.GetTaskID(ctx)
	retry, _ := asynq.GetRetryCount(ctx)

	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(tracingProcessAttrs(taskType, queue, taskID, retry)...),
	}
	// Only the headers may supply the creation context: a span already in
	// ctx must not be mistaken for it.
	parent := ctx
	if created := telemetry.SpanContextFromHeaders(ctx, t.Headers()); created.IsValid() {
		parent = trace.ContextWithRemoteSpanContext(ctx, created)
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: created}))
	}
	ctx, span := tracer.Start(parent, telemetry.SpanProcessPrefix+taskType, opts...)
	ctx = telemetry.WithTaskType(ctx, taskType)

	// The duration is recorded before the span ends, so whoever sees the
	// span ended also finds it in the histogram.
	finish := func(outcome string) {
		duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(
			telemetry.AttrTaskType.String(taskType),
			semconv.MessagingDestinationName(queue),
			telemetry.AttrOutcome.String(outcome),
		))
		span.SetAttributes(telemetry.AttrOutcome.String(outcome))
		span.End()
	}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		perr := fmt.Errorf("middleware: panic in %s: %v", taskType, r)
		span.RecordError(perr, trace.WithStackTrace(true))
		span.SetStatus(codes.Error, perr.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String("panic"))
		finish(telemetry.OutcomeError)
		panic(r) // the recovery middleware outside this one turns it into an error
	}()

	err = next.ProcessTask(ctx, t)
	outcome := telemetry.Outcome(err)
	if outcome == telemetry.OutcomeError {
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorType(err))
	}
	finish(outcome)
	return err
}

// tracingProcessAttrs are the attributes of a process span.
func tracingProcessAttrs(taskType, queue, taskID string, retry int) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(telemetry.MessagingSystem),
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(queue),
		telemetry.AttrTaskType.String(taskType),
		telemetry.AttrTaskRetryCount.Int(retry),
	}
	if taskID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(taskID))
	}
	return attrs
}
