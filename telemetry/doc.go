// Package telemetry sets up OpenTelemetry for turnstile and holds the names
// its spans and metrics use: tracer and meter providers configured from the
// OTEL_* environment, W3C trace context carried in asynq task headers, a
// traced Enqueue, and a lock.Observer that turns lock events into spans and
// metrics.
//
// # Happy path
//
//	p, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "turnstile-worker"})
//	if err != nil { return err }
//	defer p.Shutdown(context.WithoutCancel(ctx))
//	locker, err := lock.New(rdb, lock.Config{Observer: telemetry.LockObserver(p.TracerProvider(), p.MeterProvider())})
//	mux.Use(middleware.Tracing(p.TracerProvider(), p.MeterProvider()))
//	admin.Handle("/metrics", p.MetricsHandler())
//	// producer side:
//	info, err := telemetry.Enqueue(ctx, p.TracerProvider(), client, task, asynq.Queue("payments"))
//
// # Spans
//
// A trace reads: "send <task type>" (PRODUCER, at enqueue) -> "process
// <task type>" (CONSUMER, one per delivery, so each retry has its own) ->
// "lock.acquire" (INTERNAL), with "lock.contended", "lock.release" and
// "lock.lost" events. The process span's parent is the send span, taken
// from the task's traceparent header, and it also links to it, so tools
// that show only links or only parents both find the producer.
//
// The trace may begin before turnstile. Behind HTTPHandler (the admin
// server's enqueue API), the send span is the child of a SERVER span named
// by route pattern, itself the child of the caller's traceparent, read
// with Propagator (W3C Trace Context and Baggage), which Setup makes the
// global propagator. A command run by a CI system or a shell script takes
// its parent from the TRACEPARENT environment variable (ContextFromEnv).
//
// Span names deviate from the messaging semantic conventions on purpose.
// The conventions name a span "{operation} {destination}", which for asynq
// would be the queue ("process default"). Operators search by task type,
// and one queue carries many task types, so turnstile uses "{operation}
// {task type}" ("process payment:refund"). Task types are a small, fixed
// set, which keeps span names low-cardinality as the conventions intend.
// The queue is still recorded in messaging.destination.name. The
// conventions also have no messaging.system value for asynq; "asynq" is
// used as a custom value.
//
// A handler error sets the process span's status to Error with an
// error.type attribute, except flow control (IsFlowControl: a lock busy
// with another owner), which leaves the status unset and is counted with
// outcome "busy".
//
// # Metrics
//
// Metric names (the Metric constants) have no namespace and no "_total";
// the Prometheus exporter adds suffixes. Labels are only the task type, the
// resource kinds (lock.Resource.Kind) and an outcome: never a raw lock key,
// a task ID or an order ID, which would make every value its own series.
// Raw keys and fences go to span attributes only.
//
// Setting OTEL_METRICS_EXPORTER=prometheus makes autoexport serve a second
// Prometheus endpoint of its own (localhost:9464); MetricsHandler is
// usually what you want instead.
package telemetry
