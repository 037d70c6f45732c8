package telemetry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
)

// The Setup tests change the environment, so they cannot run in parallel.

func clearOTelEnv(t *testing.T) {
	t.Helper()
	// autoexport treats an empty variable as unset.
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"} {
		t.Setenv(k, "")
	}
}

func scrape(t *testing.T, p *Providers) string {
	t.Helper()
	rec := httptest.NewRecorder()
	p.MetricsHandler().ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/metrics", nil))
	res := rec.Result()
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(body)
}

func TestSetup_DefaultsToNone(t *testing.T) {
	clearOTelEnv(t)

	p, err := Setup(t.Context(), Config{ServiceName: "svc", ServiceVersion: "1.2.3"})
	require.NoError(t, err)
	require.Equal(t, "none", p.tracesExporter)
	require.Equal(t, "none", p.metricsExporter)

	// Spans still get valid contexts, so propagation works without export,
	// but are not recorded unless a sampled parent asks for it.
	tracer := p.TracerProvider().Tracer("test")
	_, span := tracer.Start(t.Context(), "x")
	require.True(t, span.SpanContext().IsValid())
	require.False(t, span.IsRecording())
	span.End()
	parent := trace.ContextWithRemoteSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	_, child := tracer.Start(parent, "y")
	require.True(t, child.SpanContext().IsSampled())
	require.Equal(t, trace.TraceID{1}, child.SpanContext().TraceID())
	child.End()

	ctx := WithTaskType(t.Context(), testTask)
	NewMetrics(p.MeterProvider()).BusyRetry(ctx, testOrder)
	body := scrape(t, p)
	require.Contains(t, body, `turnstile_task_busy_retries_total{`)
	require.Contains(t, body, `turnstile_lock_kind="order"`)
	require.Contains(t, body, `service_name="svc"`)
	require.Contains(t, body, `service_version="1.2.3"`)
	require.NotContains(t, body, testOrderID)

	require.NoError(t, p.Shutdown(context.WithoutCancel(t.Context())))
}

func TestSetup_EnvironmentWins(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "from-env")
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")

	p, err := Setup(t.Context(), Config{ServiceName: "svc"})
	require.NoError(t, err)
	require.Equal(t, "console", p.tracesExporter)
	require.Equal(t, "none", p.metricsExporter)

	// The lock observer works on these providers like on any other.
	LockObserver(p.TracerProvider(), p.MeterProvider()).Released(t.Context(), lock.ReleaseEvent{Resources: []lock.Resource{testOrder}})
	body := scrape(t, p)
	require.Contains(t, body, `service_name="from-env"`)
	require.Contains(t, body, `turnstile_lock_hold_duration_seconds_bucket{`)
	require.NoError(t, p.Shutdown(context.WithoutCancel(t.Context())))
}

func TestSetup_RejectsUnknownExporter(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_METRICS_EXPORTER", "bogus")

	_, err := Setup(t.Context(), Config{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "telemetry: metrics exporter")
}

// A reader given in Config.MetricReaders reads what /metrics serves.
func TestSetup_MoreMetricReaders(t *testing.T) {
	clearOTelEnv(t)
	reader := sdkmetric.NewManualReader()
	p, err := Setup(t.Context(), Config{MetricReaders: []sdkmetric.Reader{reader}})
	require.NoError(t, err)

	NewMetrics(p.MeterProvider()).BusyRetry(WithTaskType(t.Context(), testTask), testOrder)
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names = append(names, m.Name)
		}
	}
	require.Contains(t, names, MetricTaskBusyRetries)
	require.Contains(t, scrape(t, p), `turnstile_task_busy_retries_total{`)
	require.NoError(t, p.Shutdown(context.WithoutCancel(t.Context())))
	require.ErrorIs(t, reader.Collect(context.WithoutCancel(t.Context()), &rm), sdkmetric.ErrReaderShutdown, "Shutdown shuts it down")
}
