package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

// A Store is the order ledger the jobs read and write: ledger.Store in
// Redis, or another with the same guarantees (Commit atomic; a read given
// fences records the highest token seen per resource with the read; both
// refuse a token below that with ledger.ErrStaleFence; a commit with
// fences refuses, with ledger.ErrChanged, an order or count that is not
// what the writer read; Deliver once per
// notification; DueRevokes lists the orders a commit with RevokeAt made
// due, until a commit without one, or PostponeRevoke moves it later;
// Undelivered lists the orders with a notification a commit recorded and
// no Deliver sent yet).
type Store interface {
	Order(ctx context.Context, id string, fences ...ledger.Fence) (*ledger.Order, error)
	TicketType(ctx context.Context, id string, fences ...ledger.Fence) (ledger.TicketType, int64, error)
	Commit(ctx context.Context, fences []ledger.Fence, ch ledger.Change) error
	Deliver(ctx context.Context, orderID string) (int, error)
	DueRevokes(ctx context.Context, t time.Time, limit int) ([]string, error)
	PostponeRevoke(ctx context.Context, orderID string, t time.Time) error
	Undelivered(ctx context.Context, t time.Time, limit int) ([]string, error)
}

// A Service runs the shop's jobs over its ledger and payment gateway.
type Service struct {
	Store   Store
	Gateway gateway.Gateway
	// Locker takes the inventory locks a job needs beyond the order lock
	// the worker's guard holds. Nil runs without them (see NoLock).
	Locker *lock.Locker
	// Client enqueues the revokes of new orders and the refunds of late
	// payments.
	Client *asynq.Client
	// PaymentWindow is how long a reserved order waits for its payment
	// before it is revoked (default 15 minutes).
	PaymentWindow time.Duration
	// NoLock runs the jobs without any lock, to show what the locks
	// prevent. Never in production.
	NoLock bool
	Logger *slog.Logger
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// errArchive marks a task that cannot succeed however often it runs.
func errArchive(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, asynq.SkipRetry)...)
}

// load reads the order a task names, fenced by the order lock so that an
// older holder's late commit cannot land after this read; an unknown order
// is archived.
func (s *Service) load(ctx context.Context, kind, id string) (*ledger.Order, error) {
	o, err := s.Store.Order(ctx, id, orderFence(ctx, id)...)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("%s: order %s does not exist: %w: %w", kind, id, ledger.ErrNotFound, asynq.SkipRetry)
	}
	return o, err
}

// inventory takes the inventory locks of an order's ticket types, on top
// of the order lock, reads their availability (fenced by the inventory
// locks) and moves the order's tickets by sign (+1 back to inventory, -1
// out of it). It returns the lease to release, the fences of both locks,
// and a Change with the new availability and the counts it was computed
// from. Locks are always taken order first, then inventory, so jobs
// cannot deadlock. Outside a guarded job (a checkout) the lease takes the
// order lock too, all or none with the inventory.
func (s *Service) inventory(ctx context.Context, o *ledger.Order, sign int64) (*lock.Lease, []ledger.Fence, ledger.Change, error) {
	fences := orderFence(ctx, o.ID)
	var lease *lock.Lease
	if !s.NoLock && s.Locker != nil {
		keys := inventoryKeys(o)
		if middleware.Lease(ctx) == nil {
			keys = append(keys, orderKey(o.ID))
		}
		var err error
		if lease, err = s.Locker.Acquire(ctx, keys...); err != nil {
			return nil, nil, ledger.Change{}, fmt.Errorf("inventory of order %s: %w", o.ID, err)
		}
		for _, r := range lease.Resources() {
			fences = append(fences, ledger.Fence{Resource: r.String(), Token: lease.Fence(r)})
		}
	}
	ch := ledger.Change{Order: o, Available: map[string]int64{}, AvailableWas: map[string]int64{}}
	for _, it := range o.Items {
		if _, ok := ch.Available[it.TicketType]; !ok {
			_, n, err := s.Store.TicketType(ctx, it.TicketType, inventoryFence(lease, it.TicketType)...)
			if err != nil {
				s.release(ctx, lease)
				return nil, nil, ledger.Change{}, err
			}
			ch.Available[it.TicketType], ch.AvailableWas[it.TicketType] = n, n
		}
		ch.Available[it.TicketType] += sign * it.Quantity
	}
	return lease, fences, ch, nil
}

func inventoryKeys(o *ledger.Order) []lock.Resource {
	var rs []lock.Resource
	for _, it := range o.Items {
		rs = append(rs, inventoryKey(it.TicketType))
	}
	return rs
}

// inventoryFence is a ticket type's inventory fence from lease, if any.
func inventoryFence(lease *lock.Lease, ticketType string) []ledger.Fence {
	if lease == nil {
		return nil
	}
	r := inventoryKey(ticketType)
	return []ledger.Fence{{Resource: r.String(), Token: lease.Fence(r)}}
}

// orderFences is the order lock's fence among fences, if any.
func orderFences(orderID string, fences []ledger.Fence) []ledger.Fence {
	name := orderKey(orderID).String()
	for _, f := range fences {
		if f.Resource == name {
			return []ledger.Fence{f}
		}
	}
	return nil
}

// orderFence is the order lock's fence from the guard's lease, if any.
func orderFence(ctx context.Context, orderID string) []ledger.Fence {
	lease := middleware.Lease(ctx)
	if lease == nil {
		return nil
	}
	r := orderKey(orderID)
	return []ledger.Fence{{Resource: r.String(), Token: lease.Fence(r)}}
}

// release gives back an inventory lease taken inside a job.
func (s *Service) release(ctx context.Context, lease *lock.Lease) {
	if lease == nil {
		return
	}
	if err := lease.Release(ctx); err != nil {
		s.log().WarnContext(ctx, "release inventory lock", slog.Any("error", err))
	}
}

// deliverTimeout bounds a delivery and its retries on its own clock: the
// release before it may have used up the guard's, as in a worker paused
// mid-release.
const deliverTimeout = 5 * time.Second

// deliverAfterRelease sends the order's notifications once the job's locks
// are gone.
func (s *Service) deliverAfterRelease(ctx context.Context, orderID string) {
	middleware.AfterRelease(ctx, func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliverTimeout)
		defer cancel()
		// Tried again through a brief fault (a connection reset); past
		// the timeout the notification waits for the outbox sweep
		// (SweepOutbox), or the next job on the order if that comes first.
		_, err := s.Store.Deliver(ctx, orderID)
		for wait := 50 * time.Millisecond; err != nil && ctx.Err() == nil; wait = min(2*wait, time.Second) {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
				_, err = s.Store.Deliver(ctx, orderID)
			}
		}
		if err != nil {
			s.log().WarnContext(ctx, "deliver notifications; the outbox sweep retries", slog.String("order_id", orderID), slog.Any("error", err))
		}
	})
}

func note(o *ledger.Order, kind, suffix, text string) ledger.Notification {
	id := o.ID + ":" + kind
	if suffix != "" {
		id += ":" + suffix
	}
	return ledger.Notification{ID: id, OrderID: o.ID, Kind: kind, Text: text, At: time.Now().UTC()}
}

func paidStates() []ledger.State {
	return []ledger.State{ledger.StatePaid, ledger.StatePartiallyRefunded, ledger.StateRefunded}
}

// Confirm handles a payment webhook: a reserved order becomes paid and its
// payment is captured once; a duplicate webhook is a no-op; a payment for
// a revoked order re-reserves its tickets if they are still there and is
// refunded otherwise.
func (s *Service) Confirm(ctx context.Context, a ConfirmArgs) error {
	o, err := s.load(ctx, KindConfirm, a.OrderID)
	if err != nil {
		return err
	}
	if a.Amount != o.Amount || a.Currency != o.Currency {
		return errArchive("%s: order %s costs %d %s, the webhook says %d %s", KindConfirm, o.ID, o.Amount, o.Currency, a.Amount, a.Currency)
	}
	switch {
	case slices.Contains(paidStates(), o.State):
		s.log().InfoContext(ctx, "duplicate payment webhook: order already paid", slog.String("order_id", o.ID), slog.String("webhook_id", a.WebhookID))
		s.deliverAfterRelease(ctx, o.ID) // the try that committed may have died before it delivered
		return nil
	case o.State == ledger.StateRevoked:
		return s.confirmRevoked(ctx, o)
	}
	p, err := s.Gateway.Capture(ctx, "capture:"+o.ID, o.ID, o.Amount, o.Currency)
	if err != nil {
		return fmt.Errorf("%s: capture order %s: %w", KindConfirm, o.ID, err)
	}
	o.State, o.Paid, o.PaymentID, o.Updated = ledger.StatePaid, p.Amount, p.ID, time.Now().UTC()
	err = s.Store.Commit(ctx, orderFence(ctx, o.ID), ledger.Change{
		Order: o, Outbox: []ledger.Notification{note(o, "confirmed", "", "Your tickets are confirmed.")},
	})
	if err != nil {
		return fmt.Errorf("%s: order %s: %w", KindConfirm, o.ID, err)
	}
	s.deliverAfterRelease(ctx, o.ID)
	return nil
}

// confirmRevoked takes a payment that arrived after its order was revoked.
func (s *Service) confirmRevoked(ctx context.Context, o *ledger.Order) error {
	lease, fences, ch, err := s.inventory(ctx, o, -1)
	if err != nil {
		return fmt.Errorf("%s: %w", KindConfirm, err)
	}
	defer s.release(ctx, lease)
	fits := true
	for _, n := range ch.Available {
		fits = fits && n >= 0
	}
	p, err := s.Gateway.Capture(ctx, "capture:"+o.ID, o.ID, o.Amount, o.Currency)
	if err != nil {
		return fmt.Errorf("%s: capture order %s: %w", KindConfirm, o.ID, err)
	}
	o.Paid, o.PaymentID, o.Updated = p.Amount, p.ID, time.Now().UTC()
	if fits {
		o.State = ledger.StatePaid
		ch.Outbox = []ledger.Notification{note(o, "confirmed", "", "Your payment arrived late; your tickets are confirmed.")}
	} else {
		ch.Available, ch.AvailableWas = nil, nil
	}
	if err := s.Store.Commit(ctx, fences, ch); err != nil {
		return fmt.Errorf("%s: order %s: %w", KindConfirm, o.ID, err)
	}
	if !fits {
		// Sold out since: give the money back.
		task, err := NewTask(ctx, RefundArgs{OrderID: o.ID, RefundID: "late-" + o.ID, Amount: o.Paid, Currency: o.Currency})
		if err == nil {
			_, err = s.Client.EnqueueContext(ctx, task)
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return fmt.Errorf("%s: order %s: enqueue the refund of a late payment: %w", KindConfirm, o.ID, err)
		}
		s.log().InfoContext(ctx, "late payment for a sold-out order: refund enqueued", slog.String("order_id", o.ID))
	}
	s.deliverAfterRelease(ctx, o.ID)
	return nil
}

// Refund gives back part or all of an order's payment. A full refund voids
// the tickets and returns them to inventory; the refund of a late payment
// for a revoked order only returns the money.
func (s *Service) Refund(ctx context.Context, a RefundArgs) error {
	o, err := s.load(ctx, KindRefund, a.OrderID)
	if err != nil {
		return err
	}
	if slices.Contains(o.Refunds, a.RefundID) {
		// A retry of a refund already applied, whose try may have died
		// before it delivered.
		s.deliverAfterRelease(ctx, o.ID)
		return nil
	}
	late := o.State == ledger.StateRevoked
	switch {
	case !late && !slices.Contains([]ledger.State{ledger.StatePaid, ledger.StatePartiallyRefunded}, o.State):
		return errArchive("%s: order %s is %s: only a paid order can be refunded", KindRefund, o.ID, o.State)
	case a.Currency != o.Currency:
		return errArchive("%s: order %s is in %s, not %s", KindRefund, o.ID, o.Currency, a.Currency)
	case a.Amount > o.Paid-o.Refunded:
		return errArchive("%s: order %s: refund of %d exceeds the %d paid and not yet refunded", KindRefund, o.ID, a.Amount, o.Paid-o.Refunded)
	}
	full := !late && o.Refunded+a.Amount == o.Paid
	fences, ch := orderFence(ctx, o.ID), ledger.Change{Order: o}
	if full {
		var lease *lock.Lease
		lease, fences, ch, err = s.inventory(ctx, o, +1)
		if err != nil {
			return fmt.Errorf("%s: %w", KindRefund, err)
		}
		defer s.release(ctx, lease)
	}
	if _, err := s.Gateway.Refund(ctx, "refund:"+a.RefundID, o.ID, a.Amount, o.Currency); err != nil {
		return fmt.Errorf("%s: refund order %s: %w", KindRefund, o.ID, err)
	}
	o.Refunded += a.Amount
	o.Refunds = append(o.Refunds, a.RefundID)
	o.Updated = time.Now().UTC()
	kind := "refunded"
	switch {
	case late:
		kind = "returned"
	case full:
		o.State = ledger.StateRefunded
	default:
		o.State = ledger.StatePartiallyRefunded
	}
	ch.Outbox = []ledger.Notification{note(o, kind, a.RefundID, fmt.Sprintf("%d %s is on its way back to you.", a.Amount, a.Currency))}
	if err := s.Store.Commit(ctx, fences, ch); err != nil {
		return fmt.Errorf("%s: order %s: %w", KindRefund, o.ID, err)
	}
	s.deliverAfterRelease(ctx, o.ID)
	return nil
}

// Revoke revokes a reserved order whose payment did not arrive in time and
// returns its tickets to inventory. A paid or already revoked order is left
// as it is.
func (s *Service) Revoke(ctx context.Context, a RevokeArgs) error {
	o, err := s.load(ctx, KindRevoke, a.OrderID)
	if errors.Is(err, ledger.ErrNotFound) {
		// Scheduled by a reservation that then failed (see Reserve).
		s.log().InfoContext(ctx, "revoke: order was never reserved, nothing to do", slog.String("order_id", a.OrderID))
		return nil
	}
	if err != nil {
		return err
	}
	if o.State != ledger.StateReserved {
		s.log().InfoContext(ctx, "revoke: order is not reserved, nothing to do", slog.String("order_id", o.ID), slog.String("state", string(o.State)))
		s.deliverAfterRelease(ctx, o.ID) // a revoke's own retry, or the job that moved it on, may have died before it delivered
		return nil
	}
	lease, fences, ch, err := s.inventory(ctx, o, +1)
	if err != nil {
		return fmt.Errorf("%s: %w", KindRevoke, err)
	}
	defer s.release(ctx, lease)
	o.State, o.Updated = ledger.StateRevoked, time.Now().UTC()
	ch.Outbox = []ledger.Notification{note(o, "revoked", "", "Your reservation expired.")}
	if err := s.Store.Commit(ctx, fences, ch); err != nil {
		return fmt.Errorf("%s: order %s: %w", KindRevoke, o.ID, err)
	}
	s.deliverAfterRelease(ctx, o.ID)
	return nil
}
