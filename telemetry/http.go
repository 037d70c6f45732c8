package telemetry

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// untracedPaths are the routes HTTPHandler leaves without a span: probes
// and scrapes arrive every few seconds, carry no caller's trace, and would
// each start a trace of their own.
var untracedPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// HTTPHandler wraps h, a server's routes, so that every request but probes
// and scrapes (/healthz, /readyz, /metrics) runs inside a SERVER span from
// tp (nil: the otel global), through otelhttp. The caller's trace context
// is read with Propagator, whatever the global one is: a request carrying a traceparent header gets its span as parent, and
// whatever the handler does with the request's context, such as a traced
// Enqueue, joins the caller's trace.
//
// Spans are named by the net/http.ServeMux pattern that matched, as the
// HTTP semantic conventions ask: "POST /api/v1/tasks/{type}", never the
// raw path, whose IDs would make every request a name of its own. A
// request no pattern matched is named by its method alone. This needs h to
// be the ServeMux, or to hand it the same *http.Request, because the mux
// records the pattern on the request it routes (Request.Pattern).
//
// Server metrics go to the global meter provider, which turnstile leaves
// as a no-op.
func HTTPHandler(h http.Handler, tp trace.TracerProvider) http.Handler {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(Propagator()),
		// No span name formatter: otelhttp's default names the span
		// "{method} {route}" from Request.Pattern once the mux has routed
		// the request (unknown methods become "HTTP"), which is the naming
		// wanted here; TestHTTPHandler holds it to that.
		otelhttp.WithFilter(func(r *http.Request) bool { return !untracedPaths[r.URL.Path] }))
}
