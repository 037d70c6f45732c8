package telemetry

import "go.opentelemetry.io/otel/attribute"

// ScopeName is the instrumentation scope of the tracers and meters this
// package creates. Other packages use their own import path as their scope.
const ScopeName = "github.com/turnstilehq/turnstile/telemetry"

// MessagingSystem is the value of messaging.system on every messaging span.
// The semantic conventions list no asynq value, so this is a custom one, as
// the conventions allow.
const MessagingSystem = "asynq"

// Span names. Send and process spans are named by task type, not queue; see
// the package documentation for why.
const (
	// SpanSendPrefix prefixes the PRODUCER span of an enqueue: "send payment:refund".
	SpanSendPrefix = "send "
	// SpanProcessPrefix prefixes the CONSUMER span of one delivery: "process payment:refund".
	SpanProcessPrefix = "process "
	// SpanLockAcquire is the span of one lock.Locker Acquire call.
	SpanLockAcquire = "lock.acquire"
)

// Span event names.
const (
	// EventLockContended marks when Acquire first found a resource held.
	EventLockContended = "lock.contended"
	// EventLockRelease records the outcome of a Release on the task's span.
	EventLockRelease = "lock.release"
	// EventLockLost records a lease that lost its resources before Release.
	EventLockLost = "lock.lost"
)

// Metric names. They carry no namespace prefix and no "_total" suffix: the
// Prometheus exporter derives those (turnstile_lock_acquisitions_total).
const (
	// MetricProcessDuration is the semantic conventions' histogram of the
	// time a handler took, in seconds.
	MetricProcessDuration = "messaging.process.duration"
	// MetricLockWaitDuration is a histogram of the time Acquire took, in seconds.
	MetricLockWaitDuration = "turnstile.lock.wait.duration"
	// MetricLockHoldDuration is a histogram of the time from acquisition to
	// release, in seconds.
	MetricLockHoldDuration = "turnstile.lock.hold.duration"
	// MetricLockAcquisitions counts Acquire calls by outcome.
	MetricLockAcquisitions = "turnstile.lock.acquisitions"
	// MetricLockContended counts Acquire calls that found a resource held,
	// whatever their outcome: the contention on a kind of resource.
	MetricLockContended = "turnstile.lock.contended"
	// MetricLockReleases counts Release calls by outcome.
	MetricLockReleases = "turnstile.lock.releases"
	// MetricLockLosses counts leases lost before Release.
	MetricLockLosses = "turnstile.lock.losses"
	// MetricLockHeld is the number of leases currently held by this process.
	MetricLockHeld = "turnstile.lock.held"
	// MetricLockWaiters is the number of Acquire calls currently waiting.
	MetricLockWaiters = "turnstile.lock.waiters"
	// MetricTaskBusyRetries counts tasks given back to the queue because a
	// lock was busy.
	MetricTaskBusyRetries = "turnstile.task.busy_retries"
)

// Attribute keys that are not in the semantic conventions. Only the ones
// documented as labels appear on metrics; the others are span-only because
// they are unbounded.
const (
	// AttrTaskType is the asynq task type. Span and metric label.
	AttrTaskType = attribute.Key("turnstile.task.type")
	// AttrTaskRetryCount is how many times the task was retried before this
	// delivery. Span only.
	AttrTaskRetryCount = attribute.Key("turnstile.task.retry_count")
	// AttrOutcome is the outcome of the operation, one of the Outcome
	// constants. Span and metric label.
	AttrOutcome = attribute.Key("turnstile.outcome")
	// AttrLockKind is the sorted, comma-joined set of resource kinds
	// (lock.Resource.Kind) of an operation, such as "order,ticket_type".
	// Span and metric label.
	AttrLockKind = attribute.Key("turnstile.lock.kind")
	// AttrLockResources are the raw resource names (lock.Resource.String).
	// Span only: they are unbounded and must never become a metric label.
	AttrLockResources = attribute.Key("turnstile.lock.resources")
	// AttrLockFences are the fencing tokens, in resource order. Span only.
	AttrLockFences = attribute.Key("turnstile.lock.fences")
	// AttrLockTTL is the lease TTL in seconds. Span only.
	AttrLockTTL = attribute.Key("turnstile.lock.ttl")
	// AttrLockWait is the time Acquire took, in seconds. Span only.
	AttrLockWait = attribute.Key("turnstile.lock.wait")
	// AttrLockAttempts counts the scripts Acquire ran. Span only.
	AttrLockAttempts = attribute.Key("turnstile.lock.attempts")
	// AttrLockPassed is true on a lease passed in-process by the previous
	// holder (lock.Options.Cohort), with no Redis round trip. Span only.
	AttrLockPassed = attribute.Key("turnstile.lock.passed")
	// AttrLockHolderTTL is the holder's remaining TTL in seconds when
	// Acquire first found a resource held. Span event only.
	AttrLockHolderTTL = attribute.Key("turnstile.lock.holder_ttl")
	// AttrLockHeld is the time a lease was held, in seconds. Span event only.
	AttrLockHeld = attribute.Key("turnstile.lock.held")
)

// Outcome values of AttrOutcome. They are a closed set so that metrics keep
// a bounded number of series.
const (
	OutcomeSuccess  = "success"  // a task handler returned nil
	OutcomeBusy     = "busy"     // a lock was held by another owner: flow control, not failure
	OutcomeError    = "error"    // any other error, including a panic
	OutcomeAcquired = "acquired" // Acquire obtained every resource
	OutcomeReleased = "released" // Release deleted every resource it held
	OutcomeNotHeld  = "not_held" // Release found the lease already gone: its TTL was too tight
)
