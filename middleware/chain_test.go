package middleware_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/internal/oteltest"
	"github.com/turnstilehq/turnstile/telemetry"
)

// The whole chain on a real server: enqueue -> process -> lock.acquire
// spans, busy rounds as flow control, and metric labels without raw keys.
func TestChain_TracesEnqueueToLock(t *testing.T) {
	t.Parallel()
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			const rawKey = "order-3f9a71" // must reach spans only, never labels
			rec := oteltest.New(t)
			var o overlaps
			w := startWorker(t, be, 6, func(context.Context, *asynq.Task) error {
				o.hold(50 * time.Millisecond)
				return nil
			}, func(ws *workerSetup) {
				ws.rec = rec
				ws.rule.Wait = -1 // park at once, never wait in line
			})

			const n = 6 // one holder, the rest park
			var ids []string
			for range n {
				b, err := json.Marshal(payload{Key: rawKey})
				require.NoError(t, err)
				info, err := telemetry.Enqueue(t.Context(), rec.TP, w.client, asynq.NewTask(guardedType, b),
					asynq.MaxRetry(3), asynq.Timeout(10*time.Second))
				require.NoError(t, err)
				ids = append(ids, info.ID)
			}
			waitFor(t, 30*time.Second, func() bool { return o.done.Load() == n }, "not every task ran")
			require.Zero(t, o.seen.Load())
			// Spans end after the handler returns, a process span after its lock
			// spans (a task that found the key busy and took a waiting slot has
			// two: the busy try, then the wait): wait until every lock span's
			// process span has ended too, and n acquisitions have.
			waitFor(t, 5*time.Second, func() bool {
				ended := spanIDs(rec.Named("process " + guardedType))
				acquired := 0
				for _, a := range rec.Named("lock.acquire") {
					if !slices.Contains(ended, a.Parent.SpanID()) {
						return false
					}
					if oteltest.Attrs(a.Attributes)[telemetry.AttrOutcome].AsString() == telemetry.OutcomeAcquired {
						acquired++
					}
				}
				return acquired == n
			}, "spans missing")

			sends := rec.Named("send " + guardedType)
			require.Len(t, sends, n)
			sendIDs := spanIDs(sends)
			processes := rec.Named("process " + guardedType)
			require.GreaterOrEqual(t, len(processes), n)
			busy := 0
			for _, p := range processes {
				require.Equal(t, trace.SpanKindConsumer, p.SpanKind)
				require.Contains(t, sendIDs, p.Parent.SpanID(), "a process span's parent is its send span")
				attrs := oteltest.Attrs(p.Attributes)
				if attrs[telemetry.AttrOutcome].AsString() == telemetry.OutcomeBusy {
					busy++
					require.Equal(t, codes.Unset, p.Status.Code, "a busy round is not an error")
				}
			}
			require.Positive(t, busy, "no task was parked; the test shows nothing about busy rounds")
			processIDs := spanIDs(processes)
			acquired := 0
			for _, a := range rec.Named("lock.acquire") {
				require.Contains(t, processIDs, a.Parent.SpanID(), "lock.acquire runs inside a process span")
				attrs := oteltest.Attrs(a.Attributes)
				require.Equal(t, []string{"thing:" + rawKey}, attrs[telemetry.AttrLockResources].AsStringSlice())
				if attrs[telemetry.AttrOutcome].AsString() == telemetry.OutcomeAcquired {
					acquired++
				}
			}
			require.Equal(t, n, acquired)

			rm := rec.Collect(t)
			labels := []attribute.KeyValue{telemetry.AttrTaskType.String(guardedType), telemetry.AttrLockKind.String("thing")}
			require.Equal(t, int64(n), oteltest.Int(t, oteltest.Metric(t, rm, telemetry.MetricLockReleases),
				append(labels, telemetry.AttrOutcome.String(telemetry.OutcomeReleased))...))
			require.Equal(t, int64(busy), oteltest.Int(t, oteltest.Metric(t, rm, telemetry.MetricTaskBusyRetries), labels...))
			require.Zero(t, oteltest.Int(t, oteltest.Metric(t, rm, telemetry.MetricLockHeld), labels...))
			oteltest.EachLabel(rm, func(metric string, kv attribute.KeyValue) {
				for _, raw := range append([]string{rawKey}, ids...) {
					require.NotContains(t, kv.Value.String(), raw, "%s label %s carries a raw value", metric, kv.Key)
				}
			})
		})
	}
}

func spanIDs(spans []tracetest.SpanStub) []trace.SpanID {
	ids := make([]trace.SpanID, 0, len(spans))
	for _, s := range spans {
		ids = append(ids, s.SpanContext.SpanID())
	}
	return ids
}
