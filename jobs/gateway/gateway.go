package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// A Gateway moves money for orders. Every call carries an idempotency key: a
// retried call with the same key returns the first call's Payment and never
// moves money twice. A key stays bound to the parameters of the call that
// first moved money with it (order, kind, amount, currency); a call that
// moved nothing, because it was refused or never reached the gateway, leaves
// its key free for the same order's calls. (A gateway may bind a key to the
// first order it reached the gateway for, even when that call moved
// nothing: Simulator does.)
//
// Both methods return an error wrapping ErrInvalid for arguments refused
// before any I/O, ErrKeyReused, ErrExceedsCaptured or ErrCurrency when the
// gateway refuses the movement, ErrUnavailable when the outcome is unknown
// (retry with the same key to learn it), and the context's cause when ctx
// ends first.
type Gateway interface {
	// Capture takes amount (minor units, positive) in currency for orderID.
	Capture(ctx context.Context, key string, orderID string, amount int64, currency string) (Payment, error)
	// Refund gives back amount of what orderID's captures took, in the
	// captures' currency. The order's refunds never exceed its captures.
	Refund(ctx context.Context, key string, orderID string, amount int64, currency string) (Payment, error)
}

// Payment is one movement of money. Amount is in minor units (cents), always
// positive.
type Payment struct {
	ID       string    // "pay_" + random hex, assigned by the gateway
	Key      string    // the idempotency key
	OrderID  string    // the order the money moved for
	Kind     Kind      // KindCapture or KindRefund
	Amount   int64     // minor units, positive
	Currency string    // ISO 4217, upper case, e.g. "EUR"
	At       time.Time // when the gateway recorded it (Redis server time, UTC, µs)
}

// LogValue logs a payment as a group of typed attributes. Nothing in it is
// personal data, so nothing is redacted.
func (p Payment) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", p.ID),
		slog.String("key", p.Key),
		slog.String("order_id", p.OrderID),
		slog.String("kind", string(p.Kind)),
		slog.Int64("amount", p.Amount),
		slog.String("currency", p.Currency),
		slog.Time("at", p.At),
	)
}

// Kind says which way a Payment moved money.
type Kind string

// The kinds of Payment. The strings are stored in Redis: never change them.
const (
	KindCapture Kind = "capture" // money taken from the customer
	KindRefund  Kind = "refund"  // money given back
)

var (
	// ErrUnavailable reports a simulated outage. The call may or may not have
	// taken effect: retry with the same key, which returns the recorded
	// Payment if it did and moves the money if it did not.
	ErrUnavailable = errors.New("gateway: unavailable")

	// ErrKeyReused reports an idempotency key that already moved money with
	// other parameters (order, kind, amount or currency). Nothing moved.
	ErrKeyReused = errors.New("gateway: idempotency key reused with different parameters")

	// ErrExceedsCaptured reports a refund larger than what the order's
	// captures took minus its earlier refunds. Nothing moved.
	ErrExceedsCaptured = errors.New("gateway: refund exceeds what was captured")

	// ErrCurrency reports a capture or refund in a currency other than the
	// one the order's first capture used. Nothing moved.
	ErrCurrency = errors.New("gateway: currency differs from the order's captures")

	// ErrInvalid reports arguments or a Config refused before any I/O: an
	// empty key or order ID, an amount that is not positive or above 2^53-1,
	// a currency that is not three upper-case letters.
	ErrInvalid = errors.New("gateway: invalid argument")
)
