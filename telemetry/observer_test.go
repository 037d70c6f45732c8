package telemetry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/internal/oteltest"
	"github.com/turnstilehq/turnstile/lock"
)

// Raw IDs used below; none of them may reach a metric label.
const (
	testOrderID = "order-8f3c1"
	testTypeID  = "tt-77"
	testTask    = "payment:refund"
)

var (
	testOrder     = lock.Key("order", testOrderID)
	testInventory = lock.Key("ticket_type", testTypeID, "inventory")
)

// processCtx returns a context carrying a "process" parent span and the
// task type, as the tracing middleware would, and a func that ends it.
func processCtx(t *testing.T, b *oteltest.Recorder) (context.Context, trace.Span) {
	t.Helper()
	ctx, span := b.TP.Tracer("test").Start(t.Context(), SpanProcessPrefix+testTask)
	return WithTaskType(ctx, testTask), span
}

func TestLockObserver_Acquired(t *testing.T) {
	t.Parallel()

	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	acquired := lock.AcquireEvent{
		Resources: []lock.Resource{testInventory, testOrder},
		TTL:       10 * time.Second,
		Start:     start,
		Wait:      250 * time.Millisecond,
		Attempts:  3,
		Contended: start.Add(10 * time.Millisecond),
		HolderTTL: 2 * time.Second,
		Fences:    []int64{7, 9},
	}

	t.Run("APassedLeaseSaysSo", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ctx, parent := processCtx(t, b)
		ev := acquired
		ev.Passed, ev.Attempts = true, 0
		LockObserver(b.TP, b.MP).Acquired(ctx, ev)
		parent.End()
		attrs := oteltest.Attrs(b.Span(t, SpanLockAcquire).Attributes)
		require.True(t, attrs[AttrLockPassed].AsBool())
		require.Zero(t, attrs[AttrLockAttempts].AsInt64())
	})

	t.Run("AcquiredIsChildSpanBackdated", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ctx, parent := processCtx(t, b)
		LockObserver(b.TP, b.MP).Acquired(ctx, acquired)
		parent.End()

		s := b.Span(t, SpanLockAcquire)
		require.Equal(t, trace.SpanKindInternal, s.SpanKind)
		require.Equal(t, parent.SpanContext().SpanID(), s.Parent.SpanID())
		require.Equal(t, parent.SpanContext().TraceID(), s.SpanContext.TraceID())
		require.True(t, s.StartTime.Equal(start), "start %v", s.StartTime)
		require.True(t, s.EndTime.Equal(start.Add(250*time.Millisecond)), "end %v", s.EndTime)
		require.Equal(t, codes.Unset, s.Status.Code)

		attrs := oteltest.Attrs(s.Attributes)
		require.Equal(t, []string{testInventory.String(), testOrder.String()}, attrs[AttrLockResources].AsStringSlice())
		require.Equal(t, []int64{7, 9}, attrs[AttrLockFences].AsInt64Slice())
		require.Equal(t, OutcomeAcquired, attrs[AttrOutcome].AsString())
		require.Equal(t, "order,ticket_type", attrs[AttrLockKind].AsString())
		require.Equal(t, int64(3), attrs[AttrLockAttempts].AsInt64())
		require.False(t, attrs[AttrLockPassed].AsBool())
		require.InDelta(t, 10.0, attrs[AttrLockTTL].AsFloat64(), 1e-9)
		require.InDelta(t, 0.25, attrs[AttrLockWait].AsFloat64(), 1e-9)

		require.Len(t, s.Events, 1)
		ev := s.Events[0]
		require.Equal(t, EventLockContended, ev.Name)
		require.True(t, ev.Time.Equal(start.Add(10*time.Millisecond)), "event at %v", ev.Time)
		require.InDelta(t, 2.0, oteltest.Attrs(ev.Attributes)[AttrLockHolderTTL].AsFloat64(), 1e-9)
	})

	t.Run("UncontendedHasNoEvent", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ev := acquired
		ev.Contended, ev.HolderTTL = time.Time{}, 0
		LockObserver(b.TP, b.MP).Acquired(t.Context(), ev)
		require.Empty(t, b.Span(t, SpanLockAcquire).Events)
	})

	t.Run("BusyLeavesStatusUnset", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ev := acquired
		ev.Fences = nil
		ev.Err = fmt.Errorf("guard: %w", &lock.BusyError{Resource: testOrder, TTL: time.Second})
		ctx, parent := processCtx(t, b)
		LockObserver(b.TP, b.MP).Acquired(ctx, ev)
		parent.End()

		s := b.Span(t, SpanLockAcquire)
		require.Equal(t, codes.Unset, s.Status.Code)
		attrs := oteltest.Attrs(s.Attributes)
		require.Equal(t, OutcomeBusy, attrs[AttrOutcome].AsString())
		require.NotContains(t, attrs, attribute.Key("error.type"))
		require.NotContains(t, attrs, AttrLockFences)

		rm := b.Collect(t)
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockAcquisitions),
			AttrTaskType.String(testTask), AttrLockKind.String("order,ticket_type"), AttrOutcome.String(OutcomeBusy)))
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockContended),
			AttrTaskType.String(testTask), AttrLockKind.String("order,ticket_type")), "found held: counted as contention")
	})

	t.Run("ErrorSetsStatus", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ev := acquired
		ev.Fences = nil
		ev.Err = fmt.Errorf("lock: acquire: %w", errors.New("redis down"))
		LockObserver(b.TP, b.MP).Acquired(t.Context(), ev)

		s := b.Span(t, SpanLockAcquire)
		require.Equal(t, codes.Error, s.Status.Code)
		attrs := oteltest.Attrs(s.Attributes)
		require.Equal(t, OutcomeError, attrs[AttrOutcome].AsString())
		require.NotEmpty(t, attrs[attribute.Key("error.type")].AsString())
	})
}

func TestLockObserver_ReleasedAndLost(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name    string
		err     error
		outcome string
	}{
		{"Released", nil, OutcomeReleased},
		{"NotHeld", fmt.Errorf("lock: release: %w", lock.ErrNotHeld), OutcomeNotHeld},
		{"RedisError", errors.New("redis down"), OutcomeError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := oteltest.New(t)
			ctx, parent := processCtx(t, b)
			obs := LockObserver(b.TP, b.MP)
			obs.Acquired(ctx, lock.AcquireEvent{Resources: []lock.Resource{testOrder}, Start: time.Now(), Fences: []int64{4}})
			obs.Released(ctx, lock.ReleaseEvent{Resources: []lock.Resource{testOrder}, Fences: []int64{4}, Held: 1500 * time.Millisecond, Err: tc.err})
			parent.End()

			s := b.Span(t, SpanProcessPrefix+testTask)
			// Release is an event: the task's outcome owns the span status.
			require.Equal(t, codes.Unset, s.Status.Code)
			require.Len(t, s.Events, 1)
			require.Equal(t, EventLockRelease, s.Events[0].Name)
			attrs := oteltest.Attrs(s.Events[0].Attributes)
			require.Equal(t, tc.outcome, attrs[AttrOutcome].AsString())
			require.Equal(t, []string{testOrder.String()}, attrs[AttrLockResources].AsStringSlice())

			rm := b.Collect(t)
			labels := []attribute.KeyValue{AttrTaskType.String(testTask), AttrLockKind.String("order"), AttrOutcome.String(tc.outcome)}
			require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockReleases), labels...))
			hold := oteltest.HistogramPoint(t, oteltest.Metric(t, rm, MetricLockHoldDuration), labels...)
			require.Equal(t, uint64(1), hold.Count)
			require.InDelta(t, 1.5, hold.Sum, 1e-9)
			// Acquired then released, whatever the release outcome: none held.
			require.Equal(t, int64(0), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockHeld),
				AttrTaskType.String(testTask), AttrLockKind.String("order")))
		})
	}

	t.Run("Lost", func(t *testing.T) {
		t.Parallel()
		b := oteltest.New(t)
		ctx, parent := processCtx(t, b)
		LockObserver(b.TP, b.MP).Lost(ctx, lock.LostEvent{Resources: []lock.Resource{testOrder}, Fences: []int64{4}, Err: lock.ErrNotHeld})
		parent.End()

		s := b.Span(t, SpanProcessPrefix+testTask)
		require.Len(t, s.Events, 1)
		require.Equal(t, EventLockLost, s.Events[0].Name)
		rm := b.Collect(t)
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockLosses),
			AttrTaskType.String(testTask), AttrLockKind.String("order")))
	})
}

func TestMetrics_GuardHooks(t *testing.T) {
	t.Parallel()
	b := oteltest.New(t)
	m := NewMetrics(b.MP)
	ctx := WithTaskType(t.Context(), testTask)

	m.AddWaiters(ctx, 1, testOrder)
	m.AddWaiters(ctx, 1, testOrder)
	m.AddWaiters(ctx, -1, testOrder)
	m.BusyRetry(ctx, testOrder, testInventory)
	// Outside a task the task type label is "none", never empty.
	m.BusyRetry(t.Context(), testOrder)

	rm := b.Collect(t)
	require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockWaiters),
		AttrTaskType.String(testTask), AttrLockKind.String("order")))
	busy := oteltest.Metric(t, rm, MetricTaskBusyRetries)
	require.Equal(t, int64(1), oteltest.Int(t, busy, AttrTaskType.String(testTask), AttrLockKind.String("order,ticket_type")))
	require.Equal(t, int64(1), oteltest.Int(t, busy, AttrTaskType.String("none"), AttrLockKind.String("order")))

	var nilMetrics *Metrics
	require.NotPanics(t, func() { nilMetrics.BusyRetry(ctx, testOrder) })
}

// TestMetrics_NoRawKeysInLabels runs every observer and Metrics path and
// then walks every data point: no label may carry a raw key or an ID.
func TestMetrics_NoRawKeysInLabels(t *testing.T) {
	t.Parallel()
	b := oteltest.New(t)
	ctx, parent := processCtx(t, b)
	obs := LockObserver(b.TP, b.MP)
	m := NewMetrics(b.MP)
	resources := []lock.Resource{testOrder, testInventory}
	now := time.Now()

	m.AddWaiters(ctx, 1, resources...)
	obs.Acquired(ctx, lock.AcquireEvent{Resources: resources, Start: now, Wait: time.Millisecond, Contended: now, HolderTTL: time.Second, Fences: []int64{1, 2}})
	obs.Acquired(ctx, lock.AcquireEvent{Resources: resources, Start: now, Err: &lock.BusyError{Resource: testOrder, TTL: time.Second}})
	obs.Acquired(ctx, lock.AcquireEvent{Resources: resources, Start: now, Err: errors.New("redis down")})
	m.AddWaiters(ctx, -1, resources...)
	m.BusyRetry(ctx, testOrder)
	obs.Lost(ctx, lock.LostEvent{Resources: resources, Err: lock.ErrNotHeld})
	obs.Released(ctx, lock.ReleaseEvent{Resources: resources, Err: lock.ErrNotHeld})
	obs.Released(ctx, lock.ReleaseEvent{Resources: resources})
	parent.End()

	// The spans do carry the raw keys: that is where they belong.
	require.Equal(t, []string{testOrder.String(), testInventory.String()},
		oteltest.Attrs(b.Spans.GetSpans()[0].Attributes)[AttrLockResources].AsStringSlice())

	rm := b.Collect(t)
	names := map[string]bool{}
	forbidden := []string{testOrderID, testTypeID, testOrder.String(), testInventory.String()}
	oteltest.EachLabel(rm, func(metric string, kv attribute.KeyValue) {
		names[metric] = true
		for _, raw := range forbidden {
			require.NotContains(t, kv.Value.String(), raw, "metric %s label %s", metric, kv.Key)
		}
		require.Contains(t, []attribute.Key{AttrTaskType, AttrLockKind, AttrOutcome}, kv.Key,
			"metric %s has an unexpected label", metric)
	})
	// Every instrument was exercised, so the walk covered them all.
	for _, name := range []string{
		MetricLockWaitDuration, MetricLockHoldDuration, MetricLockAcquisitions, MetricLockReleases,
		MetricLockLosses, MetricLockHeld, MetricLockWaiters, MetricTaskBusyRetries,
	} {
		require.True(t, names[name], "metric %s not recorded", name)
		require.False(t, strings.HasSuffix(name, "_total"), name)
	}
}

var lockBusy = lock.BusyError{Resource: testOrder, TTL: time.Second}

// sampled returns an oteltest.Recorder like oteltest.New but whose tracer
// provider samples with sampler.
func sampled(t *testing.T, sampler sdktrace.Sampler) *oteltest.Recorder {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		// Background: t.Context is already cancelled in Cleanup.
		require.NoError(t, tp.Shutdown(context.Background()))
		require.NoError(t, mp.Shutdown(context.Background()))
	})
	return &oteltest.Recorder{Spans: spans, TP: tp, Reader: reader, MP: mp}
}

// TestLockObserver_Sampling checks the split LockObserver documents: a
// recording span gets every attribute and event, a sampler sees only the
// bounded ones, and metrics do not depend on either.
func TestLockObserver_Sampling(t *testing.T) {
	t.Parallel()

	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	acquired := lock.AcquireEvent{
		Resources: []lock.Resource{testOrder, testInventory},
		TTL:       10 * time.Second,
		Start:     start,
		Wait:      250 * time.Millisecond,
		Attempts:  2,
		Contended: start.Add(5 * time.Millisecond),
		HolderTTL: time.Second,
		Fences:    []int64{3, 4},
	}
	released := lock.ReleaseEvent{Resources: acquired.Resources, Fences: acquired.Fences, Held: time.Second}

	t.Run("AlwaysSampleRecordsEverything", func(t *testing.T) {
		t.Parallel()
		b := sampled(t, sdktrace.AlwaysSample())
		ctx, parent := processCtx(t, b)
		obs := LockObserver(b.TP, b.MP)
		obs.Acquired(ctx, acquired)
		obs.Released(ctx, released)
		obs.Lost(ctx, lock.LostEvent{Resources: acquired.Resources, Fences: acquired.Fences, Err: lock.ErrNotHeld})
		parent.End()

		s := b.Span(t, SpanLockAcquire)
		attrs := oteltest.Attrs(s.Attributes)
		require.Equal(t, "order,ticket_type", attrs[AttrLockKind].AsString())
		require.Equal(t, OutcomeAcquired, attrs[AttrOutcome].AsString())
		require.Equal(t, []string{testOrder.String(), testInventory.String()}, attrs[AttrLockResources].AsStringSlice())
		require.Equal(t, []int64{3, 4}, attrs[AttrLockFences].AsInt64Slice())
		require.Equal(t, int64(2), attrs[AttrLockAttempts].AsInt64())
		require.InDelta(t, 10.0, attrs[AttrLockTTL].AsFloat64(), 1e-9)
		require.InDelta(t, 0.25, attrs[AttrLockWait].AsFloat64(), 1e-9)
		require.Len(t, s.Events, 1)
		require.Equal(t, EventLockContended, s.Events[0].Name)
		require.InDelta(t, 1.0, oteltest.Attrs(s.Events[0].Attributes)[AttrLockHolderTTL].AsFloat64(), 1e-9)

		p := b.Span(t, SpanProcessPrefix+testTask)
		require.Len(t, p.Events, 2)
		require.Equal(t, EventLockRelease, p.Events[0].Name)
		rel := oteltest.Attrs(p.Events[0].Attributes)
		require.Equal(t, OutcomeReleased, rel[AttrOutcome].AsString())
		require.Equal(t, []string{testOrder.String(), testInventory.String()}, rel[AttrLockResources].AsStringSlice())
		require.Equal(t, []int64{3, 4}, rel[AttrLockFences].AsInt64Slice())
		require.InDelta(t, 1.0, rel[AttrLockHeld].AsFloat64(), 1e-9)
		require.Equal(t, EventLockLost, p.Events[1].Name)
		require.Equal(t, []string{testOrder.String(), testInventory.String()},
			oteltest.Attrs(p.Events[1].Attributes)[AttrLockResources].AsStringSlice())
	})

	t.Run("ErrorStatusWhenRecording", func(t *testing.T) {
		t.Parallel()
		b := sampled(t, sdktrace.AlwaysSample())
		ev := acquired
		ev.Fences = nil
		ev.Err = errors.New("redis down")
		LockObserver(b.TP, b.MP).Acquired(t.Context(), ev)

		s := b.Span(t, SpanLockAcquire)
		require.Equal(t, codes.Error, s.Status.Code)
		require.Equal(t, "redis down", s.Status.Description)
		require.NotEmpty(t, oteltest.Attrs(s.Attributes)[attribute.Key("error.type")].AsString())
	})

	t.Run("SamplerSeesKindAndOutcomeOnly", func(t *testing.T) {
		t.Parallel()
		sampler := &capturingSampler{}
		b := sampled(t, sampler)
		ev := acquired
		ev.Err = &lock.BusyError{Resource: testOrder, TTL: time.Second}
		ev.Fences = nil
		LockObserver(b.TP, b.MP).Acquired(t.Context(), ev)

		attrs := oteltest.Attrs(sampler.attrs(t, SpanLockAcquire))
		require.Equal(t, "order,ticket_type", attrs[AttrLockKind].AsString())
		require.Equal(t, OutcomeBusy, attrs[AttrOutcome].AsString())
		require.NotContains(t, attrs, AttrLockResources, "raw resource names must not reach the sampler")
		require.Len(t, attrs, 2, "only bounded attributes at start: %v", attrs)
		for _, kv := range sampler.attrs(t, SpanLockAcquire) {
			for _, raw := range []string{testOrderID, testTypeID} {
				require.NotContains(t, kv.Value.String(), raw, "attribute %s", kv.Key)
			}
		}
	})

	t.Run("NotRecordingStillMeasures", func(t *testing.T) {
		t.Parallel()
		b := sampled(t, sdktrace.NeverSample())
		ctx, parent := processCtx(t, b)
		require.False(t, parent.IsRecording())
		obs := LockObserver(b.TP, b.MP)
		obs.Acquired(ctx, acquired)
		obs.Released(ctx, released)
		obs.Lost(ctx, lock.LostEvent{Resources: acquired.Resources, Err: lock.ErrNotHeld})
		parent.End()
		require.Empty(t, b.Spans.GetSpans())

		rm := b.Collect(t)
		kind := AttrLockKind.String("order,ticket_type")
		task := AttrTaskType.String(testTask)
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockAcquisitions), task, kind, AttrOutcome.String(OutcomeAcquired)))
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockContended), task, kind))
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockReleases), task, kind, AttrOutcome.String(OutcomeReleased)))
		require.Equal(t, int64(1), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockLosses), task, kind))
		require.Equal(t, int64(0), oteltest.Int(t, oteltest.Metric(t, rm, MetricLockHeld), task, kind))
		require.Equal(t, uint64(1), oteltest.HistogramPoint(t, oteltest.Metric(t, rm, MetricLockWaitDuration), task, kind, AttrOutcome.String(OutcomeAcquired)).Count)
	})
}

// capturingSampler samples every span and keeps the attributes each span
// name was started with, which is all a sampler gets to decide on.
type capturingSampler struct {
	mu   sync.Mutex
	seen map[string][]attribute.KeyValue
}

func (s *capturingSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string][]attribute.KeyValue{}
	}
	s.seen[p.Name] = slices.Clone(p.Attributes)
	return sdktrace.SamplingResult{
		Decision:   sdktrace.RecordAndSample,
		Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState(),
	}
}

func (*capturingSampler) Description() string { return "capturingSampler" }

// attrs returns the attributes the span called name was started with.
func (s *capturingSampler) attrs(t *testing.T, name string) []attribute.KeyValue {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	attrs, ok := s.seen[name]
	require.True(t, ok, "sampler never asked about %q", name)
	return attrs
}
