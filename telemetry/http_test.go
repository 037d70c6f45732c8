package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/internal/oteltest"
)

func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	// What Setup does; every test that sets it sets the same propagator.
	otel.SetTextMapPropagator(Propagator())

	type bundle struct {
		rec     *oteltest.Recorder
		handler http.Handler
		// inside is the span context each handler saw in its request.
		inside chan trace.SpanContext
	}
	setup := func(t *testing.T) *bundle {
		t.Helper()
		b := &bundle{rec: oteltest.New(t), inside: make(chan trace.SpanContext, 1)}
		seen := func(w http.ResponseWriter, r *http.Request) {
			b.inside <- trace.SpanContextFromContext(r.Context())
			w.WriteHeader(http.StatusAccepted)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("POST /api/v1/tasks/{type}", seen)
		mux.HandleFunc("GET /healthz", seen)
		mux.HandleFunc("GET /metrics", seen)
		mux.HandleFunc("/dashboard/", seen)
		b.handler = HTTPHandler(mux, b.rec.TP)
		return b
	}
	serve := func(t *testing.T, b *bundle, req *http.Request) int {
		t.Helper()
		rec := httptest.NewRecorder()
		b.handler.ServeHTTP(rec, req)
		return rec.Code
	}

	t.Run("CallerIsParentAndNameIsThePattern", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		caller := oteltest.New(t)
		ctx, span := caller.TP.Tracer("test").Start(t.Context(), "caller")
		span.End()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/api/v1/tasks/payment:confirm", strings.NewReader("{}"))
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))

		require.Equal(t, http.StatusAccepted, serve(t, b, req))
		got := b.rec.Span(t, "POST /api/v1/tasks/{type}")
		require.Equal(t, trace.SpanKindServer, got.SpanKind)
		require.Equal(t, span.SpanContext().SpanID(), got.Parent.SpanID(), "the caller's span is the parent")
		require.Equal(t, span.SpanContext().TraceID(), got.SpanContext.TraceID())
		require.Equal(t, got.SpanContext.SpanID(), (<-b.inside).SpanID(), "the handler runs inside the server span")
	})

	t.Run("NeverTheRawPath", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.Equal(t, http.StatusAccepted, serve(t, b, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/dashboard/queues/critical", nil)))
		require.Equal(t, http.StatusNotFound, serve(t, b, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/no/such/route/42", nil)))
		var names []string
		for _, s := range b.rec.Spans.GetSpans() {
			names = append(names, s.Name)
		}
		require.ElementsMatch(t, []string{"GET /dashboard/", "GET"}, names)
	})

	t.Run("ProbesAndScrapesUntraced", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, path := range []string{"/healthz", "/metrics"} {
			require.Equal(t, http.StatusAccepted, serve(t, b, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil)))
			require.False(t, (<-b.inside).IsValid(), "%s got a span", path)
		}
		require.Empty(t, b.rec.Spans.GetSpans())
	})
}

func TestContextFromEnv(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanID  = "00f067aa0ba902b7"
	)

	ctx := ContextFromEnv(t.Context(), env(map[string]string{
		"TRACEPARENT": "00-" + traceID + "-" + spanID + "-01",
		"TRACESTATE":  "ci=build-42",
		"BAGGAGE":     "pipeline=nightly",
	}))
	sc := trace.SpanContextFromContext(ctx)
	require.True(t, sc.IsRemote())
	require.True(t, sc.IsSampled())
	require.Equal(t, traceID, sc.TraceID().String())
	require.Equal(t, spanID, sc.SpanID().String())
	require.Equal(t, "ci=build-42", sc.TraceState().String())
	require.Equal(t, "nightly", baggage.FromContext(ctx).Member("pipeline").Value())

	for _, bad := range []map[string]string{nil, {"TRACEPARENT": "garbage"}, {"traceparent": "00-" + traceID + "-" + spanID + "-01"}} {
		require.False(t, trace.SpanContextFromContext(ContextFromEnv(context.Background(), env(bad))).IsValid(), "%v", bad)
	}
}

// Setup makes the global propagator read W3C trace context and baggage.
func TestSetup_SetsGlobalPropagator(t *testing.T) {
	clearOTelEnv(t)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator()) // the default: none
	p, err := Setup(t.Context(), Config{})
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Shutdown(context.WithoutCancel(t.Context()))) }()
	require.ElementsMatch(t, []string{"traceparent", "tracestate", "baggage"}, otel.GetTextMapPropagator().Fields())
}
