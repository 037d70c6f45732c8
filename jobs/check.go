package jobs

import (
	"context"
	"fmt"
	"slices"

	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// A Violation is one broken invariant.
type Violation struct {
	Subject string `json:"subject"` // "order o-1", "ticket type gold"
	Rule    string `json:"rule"`
	Detail  string `json:"detail"`
}

// A Report is what Check found.
type Report struct {
	// OK is true when there are neither Violations nor Unreconciled.
	OK          bool        `json:"invariants_ok"`
	Orders      int         `json:"orders"`
	TicketTypes int         `json:"ticket_types"`
	Violations  []Violation `json:"violations"`
	// Unreconciled are orders for which the gateway moved more money than
	// the ledger knows of (RuleUnreconciled). A Redis that loses
	// acknowledged writes (a crash under appendfsync everysec, a
	// failover) loses the webhooks and refund requests it had taken, and
	// the ledger's record of what their jobs did, while the gateway keeps
	// the money it moved: the order must be reconciled with the gateway.
	// Where Redis lost nothing this is a defect like any violation. The
	// other way round, a ledger ahead of the gateway, is always a
	// violation: a job commits only after the gateway answered.
	Unreconciled []Violation `json:"unreconciled"`
}

// A Books is a Store that can also list everything, for Check.
type Books interface {
	Store
	Orders(ctx context.Context) ([]string, error)
	TicketTypes(ctx context.Context) ([]string, error)
	Outbox(ctx context.Context) (map[string]ledger.Notification, map[string]int64, error)
}

// GatewayLedger is the gateway's side of the books: what it captured and
// refunded per order.
type GatewayLedger interface {
	Ledger(ctx context.Context, orderID string) (captured, refunded int64, err error)
	Orders(ctx context.Context) ([]string, error)
}

// The rules Check applies.
const (
	RuleInventory     = "sold + reserved + available == capacity, none negative"
	RuleNumbers       = "order numbers are unique"
	RuleMoney         = "the order ledger agrees with the gateway ledger"
	RuleRevokedNet    = "a revoked order keeps no payment"
	RuleRefundRevoke  = "no order is both refunded in full and revoked"
	RuleNotifications = "every transition has exactly one notification"
	RuleUnreconciled  = "the gateway moved money the order ledger does not know of"
)

// Check compares the order ledger with itself and with the gateway's. Run
// it when no job is running: it reads each record once, not a snapshot.
func Check(ctx context.Context, store Books, gw GatewayLedger) (Report, error) {
	var r Report
	add := func(subject, rule, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Subject: subject, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	unreconciled := func(subject, format string, args ...any) {
		r.Unreconciled = append(r.Unreconciled, Violation{Subject: subject, Rule: RuleUnreconciled, Detail: fmt.Sprintf(format, args...)})
	}
	ids, err := store.Orders(ctx)
	if err != nil {
		return r, err
	}
	notes, delivered, err := store.Outbox(ctx)
	if err != nil {
		return r, err
	}
	kinds := map[string][]string{} // order -> notification kinds
	for _, n := range notes {
		kinds[n.OrderID] = append(kinds[n.OrderID], n.Kind)
		if c := delivered[n.ID]; c != 1 {
			add("order "+n.OrderID, RuleNotifications, "notification %s delivered %d times", n.ID, c)
		}
	}
	held := map[string]int64{} // ticket type -> reserved + sold
	numbers := map[string]string{}
	for _, id := range ids {
		o, err := store.Order(ctx, id)
		if err != nil {
			return r, err
		}
		subject := "order " + id
		if other, dup := numbers[o.Number]; dup {
			add(subject, RuleNumbers, "number %s is also order %s's", o.Number, other)
		}
		numbers[o.Number] = id
		if o.State == ledger.StateReserved || o.State == ledger.StatePaid || o.State == ledger.StatePartiallyRefunded {
			for _, it := range o.Items {
				held[it.TicketType] += it.Quantity
			}
		}
		captured, refunded, err := gw.Ledger(ctx, id)
		if err != nil {
			return r, err
		}
		behind := captured >= o.Paid && refunded >= o.Refunded
		switch {
		case captured == o.Paid && refunded == o.Refunded:
			if o.State == ledger.StateRevoked && captured != refunded {
				add(subject, RuleRevokedNet, "revoked with %d captured and %d refunded", captured, refunded)
			}
		case behind:
			unreconciled(subject, "order says paid %d refunded %d (%s), gateway captured %d refunded %d", o.Paid, o.Refunded, o.State, captured, refunded)
		default:
			add(subject, RuleMoney, "order says paid %d refunded %d (%s), gateway captured %d refunded %d", o.Paid, o.Refunded, o.State, captured, refunded)
		}
		k := kinds[id]
		if slices.Contains(k, "revoked") && slices.Contains(k, "refunded") && !slices.Contains(k, "confirmed") {
			add(subject, RuleRefundRevoke, "notified revoked and refunded without a confirmation in between")
		}
		checkTransitions(o, k, func(format string, args ...any) { add(subject, RuleNotifications, format, args...) })
	}
	gwOrders, err := gw.Orders(ctx)
	if err != nil {
		return r, err
	}
	for _, id := range gwOrders {
		if _, ok := slices.BinarySearch(ids, id); !ok {
			captured, refunded, err := gw.Ledger(ctx, id)
			if err != nil {
				return r, err
			}
			unreconciled("order "+id, "the gateway captured %d and refunded %d for an order the ledger does not have", captured, refunded)
		}
	}
	types, err := store.TicketTypes(ctx)
	if err != nil {
		return r, err
	}
	for _, id := range types {
		tt, avail, err := store.TicketType(ctx, id)
		if err != nil {
			return r, err
		}
		if held[id]+avail != tt.Capacity || avail < 0 {
			add("ticket type "+id, RuleInventory, "reserved and sold %d + available %d, capacity %d", held[id], avail, tt.Capacity)
		}
	}
	r.Orders, r.TicketTypes = len(ids), len(types)
	r.OK = len(r.Violations) == 0 && len(r.Unreconciled) == 0
	return r, nil
}

// checkTransitions reports a state without the notification of the
// transition that led to it, and a transition notified twice.
func checkTransitions(o *ledger.Order, kinds []string, add func(format string, args ...any)) {
	count := func(kind string) int {
		n := 0
		for _, k := range kinds {
			if k == kind {
				n++
			}
		}
		return n
	}
	switch o.State {
	case ledger.StatePaid, ledger.StatePartiallyRefunded, ledger.StateRefunded:
		if count("confirmed") != 1 {
			add("%s with %d confirmation notifications", o.State, count("confirmed"))
		}
	case ledger.StateRevoked:
		if count("revoked") != 1 {
			add("revoked with %d revoke notifications", count("revoked"))
		}
	}
	if got := count("refunded") + count("returned"); got != len(o.Refunds) {
		add("%d refunds with %d refund notifications", len(o.Refunds), got)
	}
}
