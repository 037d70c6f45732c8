package telemetry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName is the service.name when Config.ServiceName and
// OTEL_SERVICE_NAME are both empty.
const DefaultServiceName = "turnstile"

// Config configures Setup. The zero value is usable.
type Config struct {
	// ServiceName is the service.name resource attribute. Defaults to
	// DefaultServiceName. OTEL_SERVICE_NAME, when set, takes precedence,
	// as the OpenTelemetry specification requires.
	ServiceName string
	// ServiceVersion is the service.version resource attribute. Defaults to
	// the main module's version from the build info ("(devel)" for a local
	// build).
	ServiceVersion string
	// Logger receives one line saying which exporters were configured.
	// Nil discards it.
	Logger *slog.Logger
	// MetricReaders are more readers of the meter provider, beside the
	// Prometheus exporter and OTEL_METRICS_EXPORTER's: a
	// sdkmetric.ManualReader, say, through which the program reads its own
	// metrics (the demo's summary). Shutdown shuts them down too.
	MetricReaders []sdkmetric.Reader
}

// Providers holds the tracer and meter providers Setup built. Pass them to
// middleware.Tracing and LockObserver; call Shutdown before exit.
type Providers struct {
	registry       *prometheus.Registry
	tracerProvider *sdktrace.TracerProvider
	meterProvider  *sdkmetric.MeterProvider
	metricsHandler http.Handler
	// exporters name what OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER
	// selected, for the log line and tests.
	tracesExporter, metricsExporter string
}

// Setup builds tracer and meter providers from the standard OTEL_*
// environment variables, through go.opentelemetry.io/contrib/exporters/autoexport:
//
//   - OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER: "otlp", "console"
//     (stdout, for local use) or "none". Unset means "none", not
//     autoexport's "otlp": a worker started without configuration must not
//     try to reach a collector that is not there.
//   - OTEL_EXPORTER_OTLP_PROTOCOL ("grpc" or "http/protobuf"),
//     OTEL_EXPORTER_OTLP_ENDPOINT and the other OTLP variables.
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER.
//
// Whatever the environment says, the meter provider also feeds a Prometheus
// exporter on its own registry (not the global one), served by
// MetricsHandler. With OTEL_TRACES_EXPORTER=none spans still get trace and
// span IDs, propagated as usual, but are not recorded unless their parent
// was sampled upstream (OTEL_TRACES_SAMPLER is then ignored).
//
// Setup makes Propagator (W3C Trace Context and Baggage) the global
// propagator, which is what HTTP instrumentation reads a caller's
// traceparent with; the global default would drop it. It leaves the global
// tracer and meter providers alone: that choice belongs to main. It
// returns an error for an unknown exporter or protocol name.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	logger := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}

	spanExporter, err := autoexport.NewSpanExporter(ctx,
		autoexport.WithFallbackSpanExporter(func(context.Context) (sdktrace.SpanExporter, error) {
			return nil, nil // nil stands for "none"; see Setup
		}))
	if err != nil {
		return nil, fmt.Errorf("telemetry: traces exporter: %w", err)
	}
	metricReader, err := autoexport.NewMetricReader(ctx,
		autoexport.WithFallbackMetricReader(func(context.Context) (sdkmetric.Reader, error) {
			return nil, nil // nil stands for "none"; see Setup
		}))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("telemetry: metrics exporter: %w", err), shutdownExporter(ctx, spanExporter))
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	promReader, err := promexporter.New(promexporter.WithRegisterer(registry))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("telemetry: prometheus exporter: %w", err),
			shutdownExporter(ctx, spanExporter), shutdownReader(ctx, metricReader))
	}

	p := &Providers{
		registry:        registry,
		metricsHandler:  promhttp.HandlerFor(registry, promhttp.HandlerOpts{}),
		tracesExporter:  "none",
		metricsExporter: "none",
	}
	traceOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if spanExporter != nil && !autoexport.IsNoneSpanExporter(spanExporter) {
		traceOpts = append(traceOpts, sdktrace.WithBatcher(spanExporter))
		p.tracesExporter = os.Getenv("OTEL_TRACES_EXPORTER")
	} else {
		// Nothing would read a recorded span, and recording them all is a
		// real share of a guarded task's CPU. Unsampled spans still get IDs,
		// and a sampled parent's children stay sampled for the services
		// downstream.
		traceOpts = append(traceOpts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	meterOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promReader)}
	for _, r := range cfg.MetricReaders {
		meterOpts = append(meterOpts, sdkmetric.WithReader(r))
	}
	if metricReader != nil && !autoexport.IsNoneMetricReader(metricReader) {
		meterOpts = append(meterOpts, sdkmetric.WithReader(metricReader))
		p.metricsExporter = os.Getenv("OTEL_METRICS_EXPORTER")
	}
	p.tracerProvider = sdktrace.NewTracerProvider(traceOpts...)
	otel.SetTextMapPropagator(Propagator())
	p.meterProvider = sdkmetric.NewMeterProvider(meterOpts...)

	logger.InfoContext(ctx, "telemetry configured",
		slog.String("traces_exporter", p.tracesExporter),
		slog.String("metrics_exporter", p.metricsExporter))
	return p, nil
}

func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	version := cfg.ServiceVersion
	if version == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			version = bi.Main.Version
		}
	}
	// Later options win: the environment overrides the program's defaults.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			semconv.ServiceName(cmp.Or(cfg.ServiceName, DefaultServiceName)),
			semconv.ServiceVersion(cmp.Or(version, "unknown")),
		),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// A partial resource (a malformed OTEL_RESOURCE_ATTRIBUTES entry) is
	// still usable; failing the worker over it would be out of proportion.
	return res, nil
}

func shutdownExporter(ctx context.Context, e sdktrace.SpanExporter) error {
	if e == nil {
		return nil
	}
	return e.Shutdown(ctx)
}

func shutdownReader(ctx context.Context, r sdkmetric.Reader) error {
	if r == nil {
		return nil
	}
	return r.Shutdown(ctx)
}

// TracerProvider returns the tracer provider, for middleware.Tracing,
// LockObserver and Enqueue.
func (p *Providers) TracerProvider() trace.TracerProvider { return p.tracerProvider }

// MeterProvider returns the meter provider, for middleware.Tracing and
// LockObserver.
func (p *Providers) MeterProvider() metric.MeterProvider { return p.meterProvider }

// MetricsHandler returns the Prometheus scrape handler for this meter
// provider's metrics (plus Go runtime and process collectors), to be
// mounted at /metrics by the admin server. OTel names are translated the
// Prometheus way: turnstile.lock.wait.duration in seconds becomes
// turnstile_lock_wait_duration_seconds, counters gain "_total".
func (p *Providers) MetricsHandler() http.Handler { return p.metricsHandler }

// Register adds a Prometheus collector to what MetricsHandler serves, such
// as a QueueCollector.
func (p *Providers) Register(c prometheus.Collector) error {
	if err := p.registry.Register(c); err != nil {
		return fmt.Errorf("telemetry: register collector: %w", err)
	}
	return nil
}

// Shutdown flushes pending spans and metrics and shuts both providers down.
// ctx bounds the flush; on expiry, what was not exported is lost and the
// context's error is returned among the others.
func (p *Providers) Shutdown(ctx context.Context) error {
	err := errors.Join(p.tracerProvider.Shutdown(ctx), p.meterProvider.Shutdown(ctx))
	if err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}
