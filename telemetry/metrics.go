package telemetry

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/turnstilehq/turnstile/lock"
)

// lockBuckets are histogram boundaries in seconds. The SDK's default
// boundaries (0 to 10000) suit milliseconds; lock waits and holds are
// milliseconds to tens of seconds (the default TTL is 30s).
var lockBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds turnstile's lock and task instruments. Every label it
// records is low-cardinality: the task type, the resource kinds and an
// outcome; never a raw key or an ID. A nil *Metrics records nothing, so a
// caller may keep one unconditionally.
type Metrics struct {
	waitDuration metric.Float64Histogram
	holdDuration metric.Float64Histogram
	acquisitions metric.Int64Counter
	contended    metric.Int64Counter
	releases     metric.Int64Counter
	losses       metric.Int64Counter
	busyRetries  metric.Int64Counter
	held         metric.Int64UpDownCounter
	waiters      metric.Int64UpDownCounter
	// sets caches the attribute set of each label combination: there are
	// few (labels are low-cardinality by contract), and building one per
	// measurement cost five sets and their allocations per task.
	sets sync.Map // labelKey -> metric.MeasurementOption
}

// labelKey is one combination of metric labels.
type labelKey struct{ taskType, kind, outcome string }

// NewMetrics creates the instruments on mp's meter for ScopeName. A nil mp
// means otel.GetMeterProvider(). Creating the same instruments twice from
// one provider is fine: the SDK returns the same instruments, so the lock
// observer and the lock guard may each call it.
//
// Instrument errors cannot happen with these constant names on the SDK; a
// provider that still reports one gets it passed to otel.Handle, and the
// instrument it returned (no-op at worst) is used.
func NewMetrics(mp metric.MeterProvider) *Metrics {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	var errs []error
	seconds := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(lockBuckets...))
		errs = append(errs, err)
		return h
	}
	count := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64UpDownCounter {
		g, err := m.Int64UpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	out := &Metrics{
		waitDuration: seconds(MetricLockWaitDuration, "Time Acquire took, whatever its outcome."),
		holdDuration: seconds(MetricLockHoldDuration, "Time from acquisition to release of a lease."),
		acquisitions: count(MetricLockAcquisitions, "{acquisition}", "Acquire calls, by outcome: acquired, busy or error."),
		contended:    count(MetricLockContended, "{acquisition}", "Acquire calls that found a resource held, whatever their outcome."),
		releases:     count(MetricLockReleases, "{release}", "Release calls, by outcome: released, not_held (TTL too tight) or error."),
		losses:       count(MetricLockLosses, "{lease}", "Leases that lost their resources before Release."),
		busyRetries:  count(MetricTaskBusyRetries, "{task}", "Tasks given back to the queue because a lock was busy."),
		held:         gauge(MetricLockHeld, "{lease}", "Leases held by this process."),
		waiters:      gauge(MetricLockWaiters, "{waiter}", "Acquire calls of this process waiting for a resource."),
	}
	if err := errors.Join(errs...); err != nil {
		otel.Handle(err)
	}
	return out
}

// BusyRetry counts a task given back to the queue because resources were
// held by another owner. The lock guard calls it when it parks a task;
// only the resources' kinds become labels.
func (m *Metrics) BusyRetry(ctx context.Context, resources ...lock.Resource) {
	if m == nil {
		return
	}
	m.busyRetries.Add(ctx, 1, m.labels(ctx, resources, ""))
}

// AddWaiters adds delta (+1 when a wait starts, -1 when it ends) to the
// number of Acquire calls waiting for resources. The lock observer only
// hears of a wait after it ended, so the caller that waits reports it.
func (m *Metrics) AddWaiters(ctx context.Context, delta int64, resources ...lock.Resource) {
	if m == nil {
		return
	}
	m.waiters.Add(ctx, delta, m.labels(ctx, resources, ""))
}

func (m *Metrics) acquired(ctx context.Context, ev lock.AcquireEvent, outcome string) {
	if m == nil {
		return
	}
	attrs := m.labels(ctx, ev.Resources, outcome)
	m.waitDuration.Record(ctx, ev.Wait.Seconds(), attrs)
	m.acquisitions.Add(ctx, 1, attrs)
	if !ev.Contended.IsZero() {
		m.contended.Add(ctx, 1, m.labels(ctx, ev.Resources, ""))
	}
	if outcome == OutcomeAcquired {
		m.held.Add(ctx, 1, m.labels(ctx, ev.Resources, ""))
	}
}

func (m *Metrics) released(ctx context.Context, ev lock.ReleaseEvent, outcome string) {
	if m == nil {
		return
	}
	attrs := m.labels(ctx, ev.Resources, outcome)
	m.holdDuration.Record(ctx, ev.Held.Seconds(), attrs)
	m.releases.Add(ctx, 1, attrs)
	// Whatever the outcome, this process no longer holds the lease: a lost
	// lease is still Released by its owner, so this is the one decrement.
	m.held.Add(ctx, -1, m.labels(ctx, ev.Resources, ""))
}

func (m *Metrics) lost(ctx context.Context, ev lock.LostEvent) {
	if m == nil {
		return
	}
	m.losses.Add(ctx, 1, m.labels(ctx, ev.Resources, ""))
}

// labels returns the only metric labels turnstile records, as one cached
// attribute set: the task type, the resources' kinds and, unless empty, the
// outcome.
func (m *Metrics) labels(ctx context.Context, resources []lock.Resource, outcome string) metric.MeasurementOption {
	k := labelKey{taskTypeLabel(ctx), kindLabel(resources), outcome}
	if o, ok := m.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	kvs := []attribute.KeyValue{AttrTaskType.String(k.taskType), AttrLockKind.String(k.kind)}
	if outcome != "" {
		kvs = append(kvs, AttrOutcome.String(outcome))
	}
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	m.sets.Store(k, o)
	return o
}

// kindLabel is the sorted, de-duplicated, comma-joined kinds of resources:
// "order,ticket_type". Kinds are constants by lock.Key's contract, so the
// set of values stays small; "none" stands for no resources.
func kindLabel(resources []lock.Resource) string {
	switch len(resources) {
	case 0:
		return "none"
	case 1:
		return resources[0].Kind()
	}
	kinds := make([]string, 0, len(resources))
	for _, r := range resources {
		kinds = append(kinds, r.Kind())
	}
	slices.Sort(kinds)
	return strings.Join(slices.Compact(kinds), ",")
}

// attrSeconds is a duration as a float64 attribute in seconds, the unit
// the semantic conventions use for durations.
func attrSeconds(k attribute.Key, d time.Duration) attribute.KeyValue {
	return k.Float64(d.Seconds())
}
