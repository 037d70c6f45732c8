package telemetry

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// propagator is W3C Trace Context, fixed here rather than taken from
// otel.GetTextMapPropagator: the global default propagates nothing, and
// producer and worker must agree whatever their main function set up.
var propagator = propagation.TraceContext{}

// callerPropagator reads what a caller outside turnstile sends: W3C Trace
// Context and W3C Baggage. See Propagator.
var callerPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Propagator returns the propagator for what crosses into turnstile from
// other services: W3C Trace Context (traceparent, tracestate) and W3C
// Baggage. Setup makes it the global one (otel.SetTextMapPropagator), which
// the admin server's HTTP instrumentation reads, so that a caller's
// traceparent header becomes the parent of the request's server span.
func Propagator() propagation.TextMapPropagator { return callerPropagator }

// ContextFromEnv returns a copy of ctx carrying the remote span context and
// baggage that the TRACEPARENT, TRACESTATE and BAGGAGE environment
// variables hold (read through getenv), in the W3C formats of the headers
// of the same names. This is how CI systems and shell tools hand their
// trace to a command they run, as OpenTelemetry's "environment variables as
// context propagation carriers" describes. ctx is returned unchanged when
// TRACEPARENT is unset or malformed (and holds no baggage).
func ContextFromEnv(ctx context.Context, getenv func(string) string) context.Context {
	return callerPropagator.Extract(ctx, envCarrier(getenv))
}

// envCarrier reads propagation fields from environment variables: the
// field "traceparent" from TRACEPARENT. It is read-only, and lists no keys
// (getenv cannot enumerate); the W3C propagators only Get.
type envCarrier func(string) string

func (c envCarrier) Get(key string) string { return c(strings.ToUpper(key)) }
func (envCarrier) Set(string, string)      {}
func (envCarrier) Keys() []string          { return nil }

// defaultQueue is asynq's queue when no asynq.Queue option is given.
const defaultQueue = "default"

// ErrTaskOptions reports a task given to Enqueue that carries options of
// its own (asynq.NewTask(typ, payload, opts...)). asynq does not expose
// them, so Enqueue could not copy them into the task it re-creates and
// would silently drop them (a lost TaskID means duplicate work).
var ErrTaskOptions = errors.New("telemetry: task carries its own options; pass them to Enqueue instead")

// Inject writes the span context of ctx into headers as a W3C traceparent
// (and tracestate when set). headers must not be nil. Trace context goes
// into asynq task headers, never into the payload, so handlers decode the
// same payload whether or not tracing is on.
func Inject(ctx context.Context, headers map[string]string) {
	propagator.Inject(ctx, propagation.MapCarrier(headers))
}

// Extract returns a copy of ctx carrying the remote span context found in
// headers, or ctx unchanged when headers hold no valid traceparent. A nil
// headers map is allowed.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(headers))
}

// SpanContextFromHeaders returns the span context a producer injected into
// headers (the task's creation context), or an invalid one when there is
// none. Unlike Extract it never returns the span already in ctx, which is
// what a consumer needs to tell "created by" apart from "running inside".
func SpanContextFromHeaders(ctx context.Context, headers map[string]string) trace.SpanContext {
	// Blank out ctx's own span so that only the headers can supply one.
	return trace.SpanContextFromContext(Extract(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), headers))
}

// Enqueue enqueues task through client inside a PRODUCER span named
// "send <task type>", and puts that span's context into the headers of the
// enqueued task so that the worker's process span becomes its child. The
// task is re-created with asynq.NewTaskWithHeaders (task itself is not
// modified); its existing headers are kept.
//
// Give every option in opts: Enqueue returns ErrTaskOptions for a task
// built with options of its own, because asynq offers no way to read them
// back. A nil tp means a no-op tracer. Errors from asynq are returned
// wrapped and are recorded on the span.
func Enqueue(ctx context.Context, tp trace.TracerProvider, client *asynq.Client, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if taskHasOwnOptions(task) {
		return nil, fmt.Errorf("telemetry: enqueue %s: %w", task.Type(), ErrTaskOptions)
	}
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	ctx, span := tp.Tracer(ScopeName).Start(ctx, SpanSendPrefix+task.Type(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(MessagingSystem),
			semconv.MessagingOperationName("send"),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(queueOption(opts)),
			AttrTaskType.String(task.Type()),
		))
	defer span.End()

	headers := maps.Clone(task.Headers())
	if headers == nil {
		headers = make(map[string]string, 1)
	}
	Inject(ctx, headers)
	traced := asynq.NewTaskWithHeaders(task.Type(), task.Payload(), headers)

	info, err := client.EnqueueContext(ctx, traced, opts...)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorType(err))
		return nil, fmt.Errorf("telemetry: enqueue %s: %w", task.Type(), err)
	}
	span.SetAttributes(
		semconv.MessagingMessageID(info.ID),
		semconv.MessagingDestinationName(info.Queue),
	)
	return info, nil
}

// queueOption returns the queue opts select, as asynq does: the last
// asynq.Queue option wins.
func queueOption(opts []asynq.Option) string {
	queue := defaultQueue
	for _, o := range opts {
		if o == nil || o.Type() != asynq.QueueOpt {
			continue
		}
		if s, ok := o.Value().(string); ok && s != "" {
			queue = s
		}
	}
	return queue
}

// taskHasOwnOptions reports whether task was built with options. asynq
// keeps them in an unexported field; reading its length through reflect is
// the only way to refuse them instead of dropping them. Should asynq rename
// the field, the check turns itself off rather than failing.
func taskHasOwnOptions(task *asynq.Task) bool {
	v := reflect.ValueOf(task).Elem().FieldByName("opts")
	return v.IsValid() && v.Kind() == reflect.Slice && v.Len() > 0
}
