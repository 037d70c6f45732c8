package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
)

// lockObserver implements lock.Observer with spans from tracer and the
// instruments of metrics.
type lockObserver struct {
	tracer  trace.Tracer
	metrics *Metrics
}

// LockObserver returns a lock.Observer that traces and measures locks:
//
//   - Acquired: a "lock.acquire" span, child of the span in ctx (the task's
//     "process <type>" span), backdated to the event's Start and ended at
//     Start+Wait, with the raw resource names, TTL, attempts, wait, outcome,
//     kind and fences as attributes and a "lock.contended" event when
//     Acquire found a resource held; plus the wait histogram, the
//     acquisitions counter and the held up-down counter.
//   - Released: a "lock.release" event on the span in ctx and the hold
//     histogram and releases counter.
//   - Lost: a "lock.lost" event on the span in ctx and the losses counter.
//
// Only the lock kind (AttrLockKind) and the outcome (AttrOutcome) are given
// at span start, so they are the attributes a sampler sees: both are cheap
// and bounded, and they are what a sampler may reasonably decide on (keep
// every error, say). The others, the contended event and the error status
// are added only when the span records, as are the release and lost events:
// the observer runs on every task, and by default (no exporter, a
// ParentBased(NeverSample) sampler) nothing records, so building them would
// be a cost paid on every task for nothing. Metrics are recorded either way.
//
// A busy outcome leaves the span status unset: contention is flow control,
// not failure. Nil tp or mp mean the otel globals. Metrics labels are
// described on Metrics.
func LockObserver(tp trace.TracerProvider, mp metric.MeterProvider) lock.Observer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &lockObserver{tracer: tp.Tracer(ScopeName), metrics: NewMetrics(mp)}
}

// Acquired implements lock.Observer.
func (o *lockObserver) Acquired(ctx context.Context, ev lock.AcquireEvent) {
	outcome := acquireOutcome(ev.Err)
	// The span is created after the fact: the observer hears of Acquire
	// only when it returns, so both ends come from the event. Only what a
	// sampler may decide on goes in at Start; see LockObserver.
	_, span := o.tracer.Start(ctx, SpanLockAcquire,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(ev.Start),
		trace.WithAttributes(
			AttrLockKind.String(kindLabel(ev.Resources)),
			AttrOutcome.String(outcome)))
	if span.IsRecording() {
		span.SetAttributes(
			AttrLockResources.StringSlice(resourceNames(ev.Resources)),
			attrSeconds(AttrLockTTL, ev.TTL),
			attrSeconds(AttrLockWait, ev.Wait),
			AttrLockAttempts.Int(ev.Attempts),
			AttrLockPassed.Bool(ev.Passed))
		if len(ev.Fences) > 0 {
			span.SetAttributes(AttrLockFences.Int64Slice(ev.Fences))
		}
		if !ev.Contended.IsZero() {
			span.AddEvent(EventLockContended,
				trace.WithTimestamp(ev.Contended),
				trace.WithAttributes(attrSeconds(AttrLockHolderTTL, ev.HolderTTL)))
		}
		if outcome == OutcomeError {
			span.SetStatus(codes.Error, ev.Err.Error())
			span.SetAttributes(semconv.ErrorType(ev.Err))
		}
	}
	span.End(trace.WithTimestamp(ev.Start.Add(ev.Wait)))

	o.metrics.acquired(ctx, ev, outcome)
}

// Released implements lock.Observer.
func (o *lockObserver) Released(ctx context.Context, ev lock.ReleaseEvent) {
	outcome := releaseOutcome(ev.Err)
	o.metrics.released(ctx, ev, outcome)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return // nothing would keep the event; see LockObserver
	}
	attrs := []attribute.KeyValue{
		AttrLockResources.StringSlice(resourceNames(ev.Resources)),
		AttrLockFences.Int64Slice(ev.Fences),
		attrSeconds(AttrLockHeld, ev.Held),
		AttrOutcome.String(outcome),
	}
	if outcome == OutcomeError {
		attrs = append(attrs, semconv.ErrorType(ev.Err))
	}
	// An event, not a span status: the task's own outcome decides its
	// status, and a release that found the lease gone is a tuning signal.
	span.AddEvent(EventLockRelease, trace.WithAttributes(attrs...))
}

// Lost implements lock.Observer.
func (o *lockObserver) Lost(ctx context.Context, ev lock.LostEvent) {
	o.metrics.lost(ctx, ev)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return // nothing would keep the event; see LockObserver
	}
	attrs := []attribute.KeyValue{
		AttrLockResources.StringSlice(resourceNames(ev.Resources)),
		AttrLockFences.Int64Slice(ev.Fences),
		attrSeconds(AttrLockHeld, ev.Held),
	}
	if ev.Err != nil {
		attrs = append(attrs, semconv.ErrorType(ev.Err))
	}
	span.AddEvent(EventLockLost, trace.WithAttributes(attrs...))
}

func acquireOutcome(err error) string {
	if err == nil {
		return OutcomeAcquired
	}
	return Outcome(err) // busy or error
}

func releaseOutcome(err error) string {
	switch {
	case err == nil:
		return OutcomeReleased
	case errors.Is(err, lock.ErrNotHeld):
		return OutcomeNotHeld
	default:
		return OutcomeError
	}
}

func resourceNames(resources []lock.Resource) []string {
	names := make([]string, len(resources))
	for i, r := range resources {
		names[i] = r.String()
	}
	return names
}
