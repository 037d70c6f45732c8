// Package oteltest gives tests in-memory tracer and meter providers and
// small readers for what they recorded.
package oteltest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Recorder is a tracer provider that ends spans into Spans synchronously
// and a meter provider read by Reader on demand.
type Recorder struct {
	Spans  *tracetest.InMemoryExporter
	TP     *sdktrace.TracerProvider
	Reader *sdkmetric.ManualReader
	MP     *sdkmetric.MeterProvider
}

// New returns a Recorder whose providers shut down when t ends.
func New(t *testing.T) *Recorder {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		// Background: t.Context is already cancelled in Cleanup.
		require.NoError(t, tp.Shutdown(context.Background()))
		require.NoError(t, mp.Shutdown(context.Background()))
	})
	return &Recorder{Spans: spans, TP: tp, Reader: reader, MP: mp}
}

// Named returns the ended spans called name, in the order they ended.
func (r *Recorder) Named(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range r.Spans.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// Span returns the only ended span called name.
func (r *Recorder) Span(t *testing.T, name string) tracetest.SpanStub {
	t.Helper()
	found := r.Named(name)
	require.Len(t, found, 1, "spans named %q", name)
	return found[0]
}

// Collect reads every metric recorded so far.
func (r *Recorder) Collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Reader.Collect(t.Context(), &rm))
	return rm
}

// Metric returns the metric called name, failing if absent.
func Metric(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	require.Failf(t, "metric not found", "%s", name)
	return metricdata.Metrics{}
}

// Int returns the value of m's int64 sum point with exactly attrs.
func Int(t *testing.T, m metricdata.Metrics, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T, not an int64 sum", m.Name, m.Data)
	want := attribute.NewSet(attrs...)
	for _, dp := range sum.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	require.Failf(t, "data point not found", "%s with %v in %v", m.Name, want.Encoded(attribute.DefaultEncoder()), sum.DataPoints)
	return 0
}

// Histogram returns m's float64 histogram points.
func Histogram(t *testing.T, m metricdata.Metrics) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T, not a float64 histogram", m.Name, m.Data)
	return h.DataPoints
}

// HistogramPoint returns m's float64 histogram point with exactly attrs.
func HistogramPoint(t *testing.T, m metricdata.Metrics, attrs ...attribute.KeyValue) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	want := attribute.NewSet(attrs...)
	for _, dp := range Histogram(t, m) {
		if dp.Attributes.Equals(&want) {
			return dp
		}
	}
	require.Failf(t, "data point not found", "%s with %v", m.Name, want.Encoded(attribute.DefaultEncoder()))
	return metricdata.HistogramDataPoint[float64]{}
}

// EachLabel calls fn with every attribute of every data point in rm.
func EachLabel(rm metricdata.ResourceMetrics, fn func(metric string, kv attribute.KeyValue)) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, set := range pointSets(m.Data) {
				for _, kv := range set.ToSlice() {
					fn(m.Name, kv)
				}
			}
		}
	}
}

func pointSets(data metricdata.Aggregation) []attribute.Set {
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		return setsOf(d.DataPoints, func(p metricdata.DataPoint[int64]) attribute.Set { return p.Attributes })
	case metricdata.Sum[float64]:
		return setsOf(d.DataPoints, func(p metricdata.DataPoint[float64]) attribute.Set { return p.Attributes })
	case metricdata.Gauge[int64]:
		return setsOf(d.DataPoints, func(p metricdata.DataPoint[int64]) attribute.Set { return p.Attributes })
	case metricdata.Gauge[float64]:
		return setsOf(d.DataPoints, func(p metricdata.DataPoint[float64]) attribute.Set { return p.Attributes })
	case metricdata.Histogram[int64]:
		return setsOf(d.DataPoints, func(p metricdata.HistogramDataPoint[int64]) attribute.Set { return p.Attributes })
	case metricdata.Histogram[float64]:
		return setsOf(d.DataPoints, func(p metricdata.HistogramDataPoint[float64]) attribute.Set { return p.Attributes })
	}
	return nil
}

func setsOf[P any](points []P, attrs func(P) attribute.Set) []attribute.Set {
	sets := make([]attribute.Set, len(points))
	for i, p := range points {
		sets[i] = attrs(p)
	}
	return sets
}

// Attrs indexes kvs by key.
func Attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}
