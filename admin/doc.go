// Package admin is the HTTP surface operators and other services use: health
// and readiness, Prometheus metrics, the held locks (list, inspect, and a
// forced release that needs the admin token and the holder's fence), an
// enqueue API that checks payloads as the worker does, and, with a Shop in
// Deps, the order flow: stock ticket types (POST /api/v1/ticket-types),
// reserve orders (POST /api/v1/orders) and read them back with their
// payments, refunds and notifications (GET /api/v1/orders/{id}).
//
//	srv, err := admin.New(admin.Config{Token: os.Getenv("TURNSTILE_ADMIN_TOKEN")}, admin.Deps{
//		Locker: locker, Producer: producer, Metrics: tel.MetricsHandler(), Ready: ready,
//	})
//	addr, err := srv.Start(ctx)
//	defer srv.Shutdown(ctx)
//
// It listens on 127.0.0.1 unless told otherwise. With a token configured,
// every route but /healthz, /readyz, /metrics and /api/v1/openapi.json
// needs it, compared in constant time: reads take it as a bearer token or
// as the Basic auth password (what a browser sends to the locks page and
// the dashboard), changes through the API only as a bearer token
// (Authorization: Bearer <token>). Without a token, reads are open, which
// the loopback default keeps to local processes, and changes are refused.
// Changes a browser says come from another origin are refused either way.
//
// # The OpenAPI document
//
// Every /api/v1 route is described by an OpenAPI 3.1 document (OpenAPI),
// served without the token at /api/v1/openapi.json, since it holds the
// API's shape and no data, and committed as api/openapi.json, from which
// clients in other languages are generated. The routes are registered
// from the same table the document is made of, and the payload schema of
// each of the shop's task types is reflected from the Go type the worker
// decodes it into (jobs.ConfirmArgs, ...), so the document follows the
// code; go generate ./admin/ writes the file again.
//
// # Idempotency
//
// POST /api/v1/tasks/{type} and POST /api/v1/orders honour an
// Idempotency-Key header: a retry with the same key answers 200 with what
// the first request created (the same task, marked duplicate; the same
// order) instead of creating it again.
package admin
