package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
)

// childArgsEnv carries, as a JSON array, the arguments of a turnstile
// process the trace tests start: the test binary itself, entered at
// TestTraceChild, which runs main with them.
const childArgsEnv = "TURNSTILE_TEST_CHILD_ARGS"

// TestTraceChild is not a test of its own: it is where a child process
// started by startTurnstile enters, to run main as "turnstile <args>"
// with the environment it was given, as the real binary would. main exits
// the process.
func TestTraceChild(t *testing.T) {
	raw := os.Getenv(childArgsEnv)
	if raw == "" {
		t.Skip("the entry point of the trace tests' child processes")
	}
	var args []string
	require.NoError(t, json.Unmarshal([]byte(raw), &args))
	os.Args = append([]string{"turnstile"}, args...)
	main()
}

// One trace from a calling service to the lock, and from a CI job to the
// lock: a real worker process exports its spans over OTLP/HTTP to a
// receiver here. A caller's span sends traceparent to the enqueue API, so
// the trace reads caller -> "POST /api/v1/tasks/{type}" (SERVER) -> "send
// payment:confirm" (PRODUCER) -> "process payment:confirm" (CONSUMER) ->
// "lock.acquire", the last one contended because the test holds the
// order's lock. Then a "turnstile enqueue" process given TRACEPARENT and
// TRACESTATE, as a CI system sets them, emits its send span under that
// span, and the worker's process span joins the same trace.
func TestTrace_OneTraceFromCallerToLock(t *testing.T) { //nolint:tparallel // the subtests share the worker the parent starts and stops
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	store := ledger.New(rdb, "")
	require.NoError(t, store.AddTicketType(t.Context(), ledger.TicketType{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"}))
	shop := &jobs.Service{Store: store, Client: asynq.NewClientFromRedisClient(rdb)}
	for _, id := range []string{"o-trace-http", "o-trace-cli"} {
		_, err := shop.Reserve(t.Context(), id, []ledger.Item{{TicketType: "gold", Quantity: 2}})
		require.NoError(t, err)
	}

	rcv := startReceiver(t)
	otelEnv := []string{
		"OTEL_TRACES_EXPORTER=otlp", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.url,
		"OTEL_BSP_SCHEDULE_DELAY=50",
	}
	addr := freeAddr(t)
	const token = "trace-admin-token-0123456"
	worker, logs := startTurnstile(t, append([]string{
		"TURNSTILE_REDIS_URL=redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL=10ms",
		"TURNSTILE_ADMIN_ADDR=" + addr, "TURNSTILE_ADMIN_TOKEN=" + token,
		// Long enough that the held lock is waited for, not retried later.
		"TURNSTILE_LOCK_WAIT=5s",
	}, otelEnv...), "worker")
	base := "http://" + addr
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodGet, base+"/readyz", "", "")
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "the worker did not get ready; its log:\n%s", logs)

	// The callers' own tracer: its spans are only parents here, never exported.
	callerTP := sdktrace.NewTracerProvider()
	t.Cleanup(func() { require.NoError(t, callerTP.Shutdown(context.Background())) })
	caller := callerTP.Tracer("trace_test")

	t.Run("HTTPCaller", func(t *testing.T) {
		order := lock.Key("order", "o-trace-http")
		locker, err := lock.New(rdb, lock.Config{TTL: 10 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, locker.Close()) })
		held, err := locker.Acquire(t.Context(), order)
		require.NoError(t, err)

		ctx, span := caller.Start(t.Context(), "checkout", trace.WithSpanKind(trace.SpanKindClient))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/tasks/"+jobs.KindConfirm,
			strings.NewReader(`{"order_id":"o-trace-http","webhook_id":"wh-http","amount":5000,"currency":"EUR"}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)
		span.End()
		traceID := span.SpanContext().TraceID()

		// Let the lock go once the worker has found it held, whatever
		// trace its span landed in: a broken trace must fail below, on
		// the trace, not here on a timeout.
		require.Eventually(t, func() bool {
			return len(rcv.spans(func(s received) bool {
				return s.Name == telemetry.SpanLockAcquire && s.hasEvent(telemetry.EventLockContended) &&
					slices.Contains(s.strings(telemetry.AttrLockResources), order.String())
			})) > 0
		}, 30*time.Second, 20*time.Millisecond, "the worker never found the order locked; its log:\n%s", logs)
		require.NoError(t, held.Release(t.Context()))
		processed := func(s received) bool {
			return s.Name == telemetry.SpanProcessPrefix+jobs.KindConfirm && s.str(telemetry.AttrOutcome) == telemetry.OutcomeSuccess
		}
		require.Eventually(t, func() bool {
			return len(rcv.spans(processed)) > 0
		}, 40*time.Second, 20*time.Millisecond, "the confirm did not succeed; its log:\n%s", logs)

		inTrace := rcv.trace(traceID)
		server := only(t, inTrace, "POST /api/v1/tasks/{type}")
		require.Equal(t, tracepb.Span_SPAN_KIND_SERVER, server.Kind)
		require.Equal(t, span.SpanContext().SpanID().String(), server.parent(), "the caller's span is the server span's parent")
		require.Equal(t, "turnstile-worker", server.service)
		require.EqualValues(t, http.StatusCreated, server.intAttr("http.response.status_code"))

		send := only(t, inTrace, telemetry.SpanSendPrefix+jobs.KindConfirm)
		require.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, send.Kind)
		require.Equal(t, server.id(), send.parent(), "the server span is the send span's parent")

		requireProcessAndLock(t, inTrace, send, order, true)
		// One trace: no span of this task started a trace of its own.
		for _, s := range rcv.spans(func(s received) bool { return s.Name == send.Name || s.Name == server.Name || processed(s) }) {
			require.Equal(t, traceID.String(), s.trace(), "%s is outside the caller's trace", s.Name)
		}
	})

	t.Run("EnqueueWithTRACEPARENT", func(t *testing.T) {
		order := lock.Key("order", "o-trace-cli")
		ts, err := trace.ParseTraceState("ci=build-42")
		require.NoError(t, err)
		_, span := caller.Start(t.Context(), "ci job")
		span.End()
		ctx := trace.ContextWithSpanContext(t.Context(), span.SpanContext().WithTraceState(ts))
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, carrier)
		require.NotEmpty(t, carrier["tracestate"])

		cmd, out := turnstileCmd(t, append([]string{
			"TURNSTILE_REDIS_URL=redis://" + srv.Addr(),
			"TRACEPARENT=" + carrier["traceparent"], "TRACESTATE=" + carrier["tracestate"],
		}, otelEnv...), "enqueue", jobs.KindConfirm, "-json", `{"order_id":"o-trace-cli","webhook_id":"wh-cli","amount":5000,"currency":"EUR"}`, "-task-id", "trace-cli")
		stdout, err := cmd.Output()
		require.NoError(t, err, "turnstile enqueue: %s", out)
		require.Equal(t, "trace-cli\n", string(stdout))

		var done []received
		require.Eventually(t, func() bool {
			done = rcv.spans(func(s received) bool {
				return s.Name == telemetry.SpanProcessPrefix+jobs.KindConfirm && s.str("messaging.message.id") == "trace-cli" &&
					s.str(telemetry.AttrOutcome) == telemetry.OutcomeSuccess
			})
			return len(done) > 0
		}, 40*time.Second, 20*time.Millisecond, "the confirm did not succeed; the worker's log:\n%s", logs)
		traceID := span.SpanContext().TraceID()
		require.Equal(t, traceID.String(), done[0].trace(), "the worker's process span is outside the CI job's trace")

		inTrace := rcv.trace(traceID)
		send := only(t, inTrace, telemetry.SpanSendPrefix+jobs.KindConfirm)
		require.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, send.Kind)
		require.Equal(t, "turnstile-enqueue", send.service)
		require.Equal(t, span.SpanContext().SpanID().String(), send.parent(), "TRACEPARENT's span is the send span's parent")
		require.Equal(t, "ci=build-42", send.TraceState, "TRACESTATE rides along")
		requireProcessAndLock(t, inTrace, send, order, false)
	})

	require.NoError(t, worker.Process.Signal(syscall.SIGTERM))
	require.NoError(t, worker.Wait(), "the worker did not stop cleanly; its log:\n%s", logs)
	require.Zero(t, rcv.rejected(), "requests the receiver could not decode")
}

// requireProcessAndLock checks the worker's side of a trace: every
// process span of the task is a CONSUMER child of send, and the lock
// guard's lock.acquire spans for order are their children, one of them
// successful; with contended, one of them also says the order was found
// held, and for how long.
func requireProcessAndLock(t *testing.T, inTrace []received, send received, order lock.Resource, contended bool) {
	t.Helper()
	process := named(inTrace, telemetry.SpanProcessPrefix+jobs.KindConfirm)
	require.NotEmpty(t, process, "no process span in the trace")
	ids := map[string]bool{}
	for _, p := range process {
		require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, p.Kind)
		require.Equal(t, send.id(), p.parent(), "the send span is the process span's parent")
		require.Equal(t, "turnstile-worker", p.service)
		ids[p.id()] = true
	}
	var acquires []received
	for _, s := range named(inTrace, telemetry.SpanLockAcquire) {
		if slices.Contains(s.strings(telemetry.AttrLockResources), order.String()) {
			require.True(t, ids[s.parent()], "lock.acquire of %s is not a process span's child", order)
			acquires = append(acquires, s)
		}
	}
	require.True(t, slices.ContainsFunc(acquires, func(s received) bool {
		return s.str(telemetry.AttrOutcome) == telemetry.OutcomeAcquired && s.str(telemetry.AttrLockKind) == "order" &&
			s.intAttr(telemetry.AttrLockAttempts) >= 1 && s.has(telemetry.AttrLockWait) && s.has(telemetry.AttrLockTTL)
	}), "no successful lock.acquire of %s in %v", order, acquires)
	if !contended {
		return
	}
	require.True(t, slices.ContainsFunc(acquires, func(s received) bool {
		ev := s.event(telemetry.EventLockContended)
		return ev != nil && attrDouble(ev.Attributes, telemetry.AttrLockHolderTTL) > 0 && s.intAttr(telemetry.AttrLockAttempts) >= 1
	}), "no lock.acquire of %s says it found the order held", order)
}

// turnstileCmd returns a command running "turnstile args..." as a child
// process with env over this process's environment, less anything that
// configures turnstile or OpenTelemetry. Its output goes to out, or, for
// Output, stderr only.
func turnstileCmd(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	b, err := json.Marshal(args)
	require.NoError(t, err)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestTraceChild$") //nolint:gosec // G204: the test binary itself, re-run as a child.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "TURNSTILE_") || k == "TRACEPARENT" || k == "TRACESTATE" || k == "BAGGAGE" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Env = append(cmd.Env, childArgsEnv+"="+string(b))
	out := &syncBuffer{}
	cmd.Stderr = out
	cmd.WaitDelay = 10 * time.Second
	return cmd, out
}

// startTurnstile starts "turnstile args..." (see turnstileCmd) in the
// background, with stdout and stderr in logs. It is killed when the test
// ends, if it still runs.
func startTurnstile(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd, logs := turnstileCmd(t, env, args...)
	cmd.Stdout = logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill() // the test failed before it stopped the child
			_ = cmd.Wait()
		}
	})
	return cmd, logs
}

// receiver is an OTLP/HTTP trace receiver: it keeps every span it is sent.
type receiver struct {
	url string

	mu       sync.Mutex
	all      []received
	refused  int
	lastFail string
}

// received is a span with the service.name of the process that sent it.
type received struct {
	*tracepb.Span
	service string
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			r.refuse(w, err)
			return
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	if err != nil {
		r.refuse(w, err)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &export); err != nil {
		r.refuse(w, err)
		return
	}
	r.mu.Lock()
	for _, rs := range export.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.all = append(r.all, received{Span: s, service: service})
			}
		}
	}
	r.mu.Unlock()
	out, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	if err != nil {
		r.refuse(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *receiver) refuse(w http.ResponseWriter, err error) {
	r.mu.Lock()
	r.refused++
	r.lastFail = err.Error()
	r.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (r *receiver) rejected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused > 0 {
		fmt.Fprintf(os.Stderr, "receiver: last refusal: %s\n", r.lastFail)
	}
	return r.refused
}

// spans returns the spans received so far that keep accepts.
func (r *receiver) spans(keep func(received) bool) []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, s := range r.all {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// trace returns the spans of one trace received so far.
func (r *receiver) trace(id trace.TraceID) []received {
	return r.spans(func(s received) bool { return s.trace() == id.String() })
}

// named returns the spans called name.
func named(spans []received, name string) []received {
	var out []received
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// only returns the one span called name, failing the test unless there
// is exactly one.
func only(t *testing.T, spans []received, name string) received {
	t.Helper()
	found := named(spans, name)
	if len(found) != 1 {
		names := make([]string, len(spans))
		for i, s := range spans {
			names[i] = s.Name
		}
		t.Fatalf("want one span %q in the trace, got %d; the trace holds %q", name, len(found), names)
	}
	return found[0]
}

func (s received) trace() string  { return fmt.Sprintf("%x", s.TraceId) }
func (s received) id() string     { return fmt.Sprintf("%x", s.SpanId) }
func (s received) parent() string { return fmt.Sprintf("%x", s.ParentSpanId) }

func (s received) String() string {
	return fmt.Sprintf("%s(%s<-%s %v)", s.Name, s.id(), s.parent(), s.Attributes)
}

func (s received) attr(key attribute.Key) *commonpb.AnyValue {
	for _, kv := range s.Attributes {
		if kv.GetKey() == string(key) {
			return kv.GetValue()
		}
	}
	return nil
}

func (s received) has(key attribute.Key) bool      { return s.attr(key) != nil }
func (s received) str(key attribute.Key) string    { return s.attr(key).GetStringValue() }
func (s received) intAttr(key attribute.Key) int64 { return s.attr(key).GetIntValue() }
func (s received) strings(key attribute.Key) []string {
	var out []string
	for _, v := range s.attr(key).GetArrayValue().GetValues() {
		out = append(out, v.GetStringValue())
	}
	return out
}

func (s received) event(name string) *tracepb.Span_Event {
	for _, e := range s.Events {
		if e.GetName() == name {
			return e
		}
	}
	return nil
}

func (s received) hasEvent(name string) bool { return s.event(name) != nil }

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func attrDouble(kvs []*commonpb.KeyValue, key attribute.Key) float64 {
	for _, kv := range kvs {
		if kv.GetKey() == string(key) {
			return kv.GetValue().GetDoubleValue()
		}
	}
	return 0
}
