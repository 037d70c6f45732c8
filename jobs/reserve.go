package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/middleware"
)

var (
	// ErrSoldOut reports a reservation that asks for more tickets than are
	// left.
	ErrSoldOut = errors.New("jobs: sold out")
	// ErrOrderExists reports a reservation under an order ID that already
	// names an order with other items.
	ErrOrderExists = errors.New("jobs: order exists")
	// ErrMixedEvents reports a reservation of ticket types of several
	// events: an order is of one event, whose keys share a Redis Cluster
	// slot, so that it commits in one script.
	ErrMixedEvents = errors.New("jobs: ticket types of several events in one order")
)

// DefaultPaymentWindow is how long a reservation waits for its payment.
const DefaultPaymentWindow = 15 * time.Minute

// MaxQuantity bounds the tickets of one type in one order.
const MaxQuantity = 100

// Reserve is the checkout: under the inventory locks of the ticket types it
// reserves the items for a new order, gives the order the next order
// number, and schedules its revoke for when the payment window closes. It
// returns ErrSoldOut, and reserves nothing, when an item is not available.
//
// The revoke is scheduled before the order is committed: a revoke that
// cannot be scheduled fails the reservation, which then holds no tickets,
// while one whose reservation fails afterwards finds no order and does
// nothing. The other way round, an error between the two (a failover, a
// cut connection) left an order reserved with no revoke, its tickets held
// for good.
//
// A reservation is safe to retry with the same order ID after any error:
// under the order's lock, an order that exists already is returned as it
// is when it holds the same items, and refused with ErrOrderExists when
// not, so a retry whose first try committed reserves nothing twice.
//
// All items must be of one event (ErrMixedEvents otherwise, and nothing is
// reserved); the order is of that event.
func (s *Service) Reserve(ctx context.Context, orderID string, items []ledger.Item) (*ledger.Order, error) {
	if err := checkItems(orderID, items); err != nil {
		return nil, fmt.Errorf("jobs: reserve: %w", err)
	}
	types, event, err := s.ticketTypes(ctx, items)
	if err != nil {
		return nil, fmt.Errorf("jobs: reserve: order %s: %w", orderID, err)
	}
	o := &ledger.Order{ID: orderID, Event: event, Items: items, State: ledger.StateReserved, Created: time.Now().UTC()}
	o.Updated = o.Created
	lease, fences, change, err := s.inventory(ctx, o, -1)
	if err != nil {
		return nil, fmt.Errorf("jobs: reserve: %w", err)
	}
	defer s.release(ctx, lease)
	had, err := s.Store.Order(ctx, orderID)
	if err == nil {
		// A retry: read it again, fenced, in its event. A new order is
		// not read fenced, as that would leave a fence key behind for
		// every sold-out checkout; the inventory reads above, fenced by
		// the same lease, already refuse an older holder's commit.
		had, err = s.Store.Order(ctx, orderID, orderFences(orderID, fences)...)
	}
	switch {
	case err == nil && slices.Equal(had.Items, items):
		return had, nil
	case err == nil:
		return nil, fmt.Errorf("jobs: reserve: order %s: %w", orderID, ErrOrderExists)
	case !errors.Is(err, ledger.ErrNotFound):
		return nil, fmt.Errorf("jobs: reserve: %w", err)
	}
	for _, it := range items {
		tt := types[it.TicketType]
		if o.Currency == "" {
			o.Currency = tt.Currency
		} else if o.Currency != tt.Currency {
			return nil, fmt.Errorf("jobs: reserve: ticket types in %s and %s in one order", o.Currency, tt.Currency)
		}
		if change.Available[it.TicketType] < 0 {
			return nil, fmt.Errorf("jobs: reserve %d of %s: %w", it.Quantity, it.TicketType, ErrSoldOut)
		}
		o.Amount += tt.Price * it.Quantity
	}
	window := s.PaymentWindow
	if window <= 0 {
		window = DefaultPaymentWindow
	}
	task, err := NewTask(ctx, RevokeArgs{OrderID: o.ID}, asynq.ProcessIn(window))
	if err == nil {
		_, err = s.Client.EnqueueContext(ctx, task)
	}
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		err = nil // scheduled by an earlier try of this reservation
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: reserve: order %s: schedule its revoke: %w", o.ID, err)
	}
	change.RevokeAt = o.Created.Add(window)
	if err := s.Store.Commit(ctx, fences, change); err != nil {
		return nil, fmt.Errorf("jobs: reserve: %w", err)
	}
	return o, nil
}

// ticketTypes reads the ticket types of items and returns them with their
// one event, or an error wrapping ErrMixedEvents.
func (s *Service) ticketTypes(ctx context.Context, items []ledger.Item) (map[string]ledger.TicketType, string, error) {
	types := make(map[string]ledger.TicketType, len(items))
	for _, it := range items {
		tt, _, err := s.Store.TicketType(ctx, it.TicketType)
		if err != nil {
			return nil, "", err
		}
		types[it.TicketType] = tt
		if first := types[items[0].TicketType]; tt.Event != first.Event {
			return nil, "", fmt.Errorf("%s is of event %q, %s of %q: %w", first.ID, first.Event, tt.ID, tt.Event, ErrMixedEvents)
		}
	}
	return types, types[items[0].TicketType].Event, nil
}

func checkItems(orderID string, items []ledger.Item) error {
	if err := checkID("order_id", orderID); err != nil {
		return err
	}
	if len(items) == 0 {
		return &middleware.PayloadError{Field: "items", Problem: "an order needs at least one item"}
	}
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		if err := checkID(field+".ticket_type", it.TicketType); err != nil {
			return err
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			return &middleware.PayloadError{Field: field + ".quantity", Problem: fmt.Sprintf("want 1 to %d", MaxQuantity)}
		}
	}
	return nil
}
