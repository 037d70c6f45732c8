package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
)

// Args are a task's typed payload. Kind is its asynq task type, stable
// forever: tasks already queued carry it.
type Args interface {
	Kind() string
	// Validate reports the first invalid field as a *middleware.PayloadError.
	Validate() error
}

// The task kinds.
const (
	KindConfirm = "payment:confirm"
	KindRefund  = "payment:refund"
	KindRevoke  = "order:revoke"
)

// ConfirmArgs is a payment webhook: the gateway says the order was paid.
// Duplicate webhooks share WebhookID.
type ConfirmArgs struct {
	OrderID   string `json:"order_id"`
	WebhookID string `json:"webhook_id"`
	Amount    int64  `json:"amount"` // minor units
	Currency  string `json:"currency"`
}

// RefundArgs asks to give back Amount of an order's payment. RefundID names
// the request: the gateway's idempotency key derives from it, so a retried
// refund never moves money twice.
type RefundArgs struct {
	OrderID  string `json:"order_id"`
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"` // minor units
	Currency string `json:"currency"`
}

// RevokeArgs revokes an order whose payment did not arrive in time.
type RevokeArgs struct {
	OrderID string `json:"order_id"`
}

// Kind implements Args.
func (ConfirmArgs) Kind() string { return KindConfirm }

// Kind implements Args.
func (RefundArgs) Kind() string { return KindRefund }

// Kind implements Args.
func (RevokeArgs) Kind() string { return KindRevoke }

// Validate implements Args.
func (a ConfirmArgs) Validate() error {
	return first(checkID("order_id", a.OrderID), checkID("webhook_id", a.WebhookID),
		checkAmount("amount", a.Amount), checkCurrency("currency", a.Currency))
}

// Validate implements Args.
func (a RefundArgs) Validate() error {
	return first(checkID("order_id", a.OrderID), checkID("refund_id", a.RefundID),
		checkAmount("amount", a.Amount), checkCurrency("currency", a.Currency))
}

// Validate implements Args.
func (a RevokeArgs) Validate() error { return checkID("order_id", a.OrderID) }

// MaxAmount bounds amounts: a billion in major units.
const MaxAmount = 100_000_000_000

var (
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

func checkID(field, v string) error {
	switch {
	case v == "":
		return &middleware.PayloadError{Field: field, Problem: "missing"}
	case !idPattern.MatchString(v):
		return &middleware.PayloadError{Field: field, Problem: "want 1-64 letters, digits, '-' or '_', starting with a letter or digit"}
	}
	return nil
}

func checkAmount(field string, v int64) error {
	if v <= 0 || v > MaxAmount {
		return &middleware.PayloadError{Field: field, Problem: fmt.Sprintf("want a positive amount in minor units up to %d", int64(MaxAmount))}
	}
	return nil
}

func checkCurrency(field, v string) error {
	if !currencyPattern.MatchString(v) {
		return &middleware.PayloadError{Field: field, Problem: "want an ISO 4217 code such as EUR"}
	}
	return nil
}

func first(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Decode decodes and validates a payload of T. Unknown fields are refused,
// so that a producer's typo is not silently dropped.
func Decode[T Args](payload []byte) (T, error) {
	var a T
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, &middleware.PayloadError{Field: "(body)", Problem: err.Error()}
	}
	if dec.More() {
		return a, &middleware.PayloadError{Field: "(body)", Problem: "more than one JSON value"}
	}
	return a, a.Validate()
}

// Per-kind enqueue options.
var (
	queues   = map[string]string{KindConfirm: "critical", KindRefund: "default", KindRevoke: "default"}
	timeouts = map[string]time.Duration{KindConfirm: 30 * time.Second, KindRefund: 30 * time.Second, KindRevoke: 10 * time.Second}
)

// MaxRetry is every kind's retry budget.
const MaxRetry = 10

// taskID is the ID that makes a duplicate task a conflict at enqueue.
func taskID(a Args) string {
	switch a := a.(type) {
	case ConfirmArgs:
		return "confirm:" + a.WebhookID
	case RefundArgs:
		return "refund:" + a.RefundID
	case RevokeArgs:
		return "revoke:" + a.OrderID
	}
	return ""
}

// NewTask validates args and returns their task with the kind's queue,
// retries, timeout and a task ID that makes a duplicate (the same webhook,
// refund request or revoke) a conflict at enqueue (asynq.ErrTaskIDConflict)
// while the first exists; opts come after and win. The trace context of
// ctx goes into the task's headers, so the worker's span joins the trace.
func NewTask[T Args](ctx context.Context, args T, opts ...asynq.Option) (*asynq.Task, error) {
	if err := args.Validate(); err != nil {
		return nil, fmt.Errorf("jobs: %s: %w", args.Kind(), err)
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("jobs: %s: %w", args.Kind(), err)
	}
	headers := map[string]string{}
	telemetry.Inject(ctx, headers)
	kind := args.Kind()
	all := append([]asynq.Option{
		asynq.Queue(queues[kind]), asynq.MaxRetry(MaxRetry),
		asynq.Timeout(timeouts[kind]), asynq.TaskID(taskID(args)),
	}, opts...)
	return asynq.NewTaskWithHeaders(kind, b, headers, all...), nil
}

// Resources named by the jobs' locks.
func orderKey(id string) lock.Resource     { return lock.Key("order", id) }
func inventoryKey(id string) lock.Resource { return lock.Key("ticket_type", id, "inventory") }

// orderKeys is the key function of the kinds that lock one order.
func orderKeys[T Args](orderID func(T) string) middleware.KeyFunc {
	return func(t *asynq.Task) ([]lock.Resource, error) {
		a, err := Decode[T](t.Payload())
		if err != nil {
			return nil, err
		}
		return []lock.Resource{orderKey(orderID(a))}, nil
	}
}
