package telemetry_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/telemetry"
)

// BenchmarkLockObserver is what the observer costs one guarded task, an
// acquisition and a release, with metrics recorded and no span exported
// (the default).
func BenchmarkLockObserver(b *testing.B) {
	obs := telemetry.LockObserver(noop.NewTracerProvider(), sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	ctx := telemetry.WithTaskType(context.Background(), "payment:refund")
	rs := []lock.Resource{lock.Key("order", "o-1")}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		obs.Acquired(ctx, lock.AcquireEvent{Resources: rs, TTL: time.Second, Start: now, Wait: time.Millisecond, Attempts: 1, Fences: []int64{7}})
		obs.Released(ctx, lock.ReleaseEvent{Resources: rs, Fences: []int64{7}, Held: time.Millisecond})
	}
}
