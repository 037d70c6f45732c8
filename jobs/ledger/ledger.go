// Package ledger keeps the shop's order ledger: ticket types and their
// availability, orders, and the outbox of notifications. A writer reads
// what it will change with the fencing tokens of the locks it holds, and
// writes with one Commit that carries the same tokens. The store keeps the
// highest token it has seen per resource, in a read or a write, and
// refuses, in the same atomic step as the read or the write, a token lower
// than that: once a newer holder has touched a resource, a writer that
// lost its lock while paused can neither read it again nor commit what it
// computed from its earlier read.
//
// The store writes what its caller computed and checks nothing else: it is
// the lock around the read, the gateway call and the write that keeps the
// ledger consistent, and running the jobs without it shows what breaks.
//
//	store := ledger.New(rdb, "")
//	o, err := store.Order(ctx, orderID, fences...) // a fenced read
//	o.State = ledger.StatePaid
//	err = store.Commit(ctx, fences, ledger.Change{Order: o, Outbox: []ledger.Notification{...}})
package ledger

import (
	"errors"
	"time"
)

// State is where an order stands.
type State string

// The states of an order: reserved -> paid -> (partially_)refunded, and
// reserved -> revoked.
const (
	StateReserved          State = "reserved"
	StatePaid              State = "paid"
	StatePartiallyRefunded State = "partially_refunded"
	StateRefunded          State = "refunded"
	StateRevoked           State = "revoked"
)

// A TicketType is a kind of ticket with a fixed capacity.
type TicketType struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Capacity int64  `json:"capacity"`
	Price    int64  `json:"price"` // minor units
	Currency string `json:"currency"`
}

// An Item is a quantity of one ticket type in an order.
type Item struct {
	TicketType string `json:"ticket_type"`
	Quantity   int64  `json:"quantity"`
}

// An Order reserves items and, once paid, holds them.
type Order struct {
	ID       string `json:"id"`
	Number   string `json:"number"` // "TS-000042", given by the first Commit
	Items    []Item `json:"items"`
	Amount   int64  `json:"amount"` // minor units
	Currency string `json:"currency"`
	State    State  `json:"state"`
	Paid     int64  `json:"paid"`     // captured at the gateway
	Refunded int64  `json:"refunded"` // refunded at the gateway
	// Refunds are the IDs of the refund requests applied, so that a retried
	// refund job sees its own earlier work.
	Refunds   []string  `json:"refunds,omitempty"`
	PaymentID string    `json:"payment_id,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// A Notification tells a customer about a transition. Its ID names the
// order and the transition ("o-1:confirmed", "o-1:refunded:r-7"), so that
// recording it twice records it once.
type Notification struct {
	ID      string    `json:"id"`
	OrderID string    `json:"order_id"`
	Kind    string    `json:"kind"` // confirmed, refunded, revoked
	Text    string    `json:"text"`
	At      time.Time `json:"at"`
}

// A Fence is the fencing token of the lock a reader or writer holds on a
// resource (lock.Lease.Fence), named as the lock names it
// (lock.Resource.String).
type Fence struct {
	Resource string
	Token    int64
}

// A Change is what one step of a job writes, atomically.
type Change struct {
	// Order is written whole when set. An order without a Number gets the
	// next one.
	Order *Order
	// Available sets ticket types' available counts.
	Available map[string]int64
	// Outbox records notifications to send once the locks are released;
	// one already recorded is left as it is.
	Outbox []Notification
}

var (
	// ErrStaleFence reports a read or a write whose fencing token is lower
	// than one the store has already seen for the resource: its holder's
	// lock was taken over by a newer holder, which has read or written it.
	ErrStaleFence = errors.New("ledger: stale fencing token")
	// ErrNotFound reports an order or ticket type the store does not have.
	ErrNotFound = errors.New("ledger: not found")
)

// Quantity returns how many tickets of a type the order holds.
func (o *Order) Quantity(ticketType string) int64 {
	var n int64
	for _, it := range o.Items {
		if it.TicketType == ticketType {
			n += it.Quantity
		}
	}
	return n
}
