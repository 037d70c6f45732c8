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
// The store writes what its caller computed and checks nothing but the
// fences and, with them, that what the caller read still stands (a Redis
// that lost acknowledged writes fails that: ErrChanged): it is the lock
// around the read, the gateway call and the write that keeps the ledger
// consistent, and running the jobs without it shows what breaks.
//
// Ticket types belong to events, and an order to the event of its ticket
// types. The keys of one event share a Redis Cluster hash tag, so each
// Commit, which touches one order and its ticket types, runs in one slot,
// while events spread over the cluster's masters. The Store finds an
// order's event by its ID, and a ticket type's by its ID, itself.
//
//	store := ledger.New(rdb, "")
//	o, err := store.Order(ctx, orderID, fences...) // a fenced read
//	o.State = ledger.StatePaid
//	err = store.Commit(ctx, fences, ledger.Change{Order: o, Outbox: []ledger.Notification{...}})
package ledger

import (
	"errors"
	"fmt"
	"regexp"
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
	ID string `json:"id"`
	// Event is what the tickets are for: a concert, a match. Its keys
	// share a Redis Cluster slot, so its orders commit in one script,
	// while other events' keys spread (see Store). Empty is the default
	// event. See CheckEvent for what it may contain.
	Event    string `json:"event"`
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
	ID string `json:"id"`
	// Event is the event of every ticket type in Items: an order is of
	// one event, so that it commits in one Redis Cluster slot.
	Event    string `json:"event,omitempty"`
	Number   string `json:"number"` // "TS-000042", or "TS-<event>-000042", given by the first Commit
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

	// read marks what Store.Order read, for Commit to check that it still
	// stands (ErrChanged); empty for an order not read from a Store.
	read string
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
	// AvailableWas holds, per ticket type of Available, the count it was
	// computed from, as the writer read it: the commit is refused with
	// ErrChanged when the store holds another. Writers set it for every
	// count they change; a type without one is written unchecked.
	AvailableWas map[string]int64
	// Outbox records notifications to send once the locks are released;
	// one already recorded is left as it is. Until every one is delivered
	// the order is listed by Store.Undelivered, which a sweep reads to
	// send what a worker that died before its delivery left.
	Outbox []Notification
	// RevokeAt, with Order, makes the order due for its revoke from then
	// (Store.DueRevokes) until a commit of it without one. The revoke task
	// a checkout schedules lives in the queue's Redis, which can lose it
	// apart from this commit (another master on Cluster, a failover);
	// this is how the order is found again.
	RevokeAt time.Time
}

var (
	// ErrStaleFence reports a read or a write whose fencing token is lower
	// than one the store has already seen for the resource: its holder's
	// lock was taken over by a newer holder, which has read or written it.
	ErrStaleFence = errors.New("ledger: stale fencing token")
	// ErrChanged reports a commit refused because an order or a count it
	// was computed from is no longer what the writer read: Redis lost
	// acknowledged writes after the read. Nothing was written; a retry
	// reads again.
	ErrChanged = errors.New("ledger: changed since it was read")
	// ErrNotFound reports an order or ticket type the store does not have.
	ErrNotFound = errors.New("ledger: not found")
	// ErrOtherEvent reports a change that spans events, or a new order
	// whose ID an order of another event has taken.
	ErrOtherEvent = errors.New("ledger: of another event")
)

// eventPattern is what an event may be: it sits in Redis keys and, as it
// is, in order numbers inside the order's JSON.
var eventPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}[A-Za-z0-9]$|^[A-Za-z0-9]$`)

// CheckEvent returns an error unless event is empty (the default event)
// or 1-64 letters, digits, '.', '_' or '-' that start and end with a
// letter or digit.
func CheckEvent(event string) error {
	if event == "" || eventPattern.MatchString(event) {
		return nil
	}
	return fmt.Errorf("event %q: want 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", event)
}

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
