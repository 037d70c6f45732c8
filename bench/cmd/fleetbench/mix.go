package main

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// The key patterns.
const (
	patternDistinct = "distinct"
	patternHot      = "hot"
)

// mix builds batches of the demo's job mix for one key pattern, checking
// out the orders they need first.
type mix struct {
	shop    *shop
	pattern string
	rand    *rand.Rand
	prefix  string // of order IDs, one per run
	// hotOrders is how many orders the hot pattern's tasks share.
	hotOrders int

	batches int             // batches built, for unique order and task IDs
	hot     []*ledger.Order // the hot pattern's orders, paid, once checked out
	seq     int             // hot tasks built so far
}

// batch checks out what n tasks need and returns the tasks.
func (m *mix) batch(ctx context.Context, n int) ([]job, error) {
	m.batches++
	if m.pattern == patternHot {
		return m.hotBatch(ctx, n)
	}
	return m.distinctBatch(ctx, n)
}

// distinctBatch is one order per task, in the demo's proportions: a
// payment webhook for most orders, sent twice by the gateway for some,
// the revoke of an order whose payment never came, and the full refund
// of a paid order.
func (m *mix) distinctBatch(ctx context.Context, n int) ([]job, error) {
	type plan struct {
		kind string
		dup  bool
	}
	var (
		cs    []checkout
		plans []plan
		tasks int
	)
	for i := 0; tasks < n; i++ {
		c := checkout{
			id:    fmt.Sprintf("%s-%d-%06d", m.prefix, m.batches, i),
			items: []ledger.Item{{TicketType: ticketTypeID(m.rand.IntN(ticketTypes)), Quantity: 1 + m.rand.Int64N(3)}},
		}
		var p plan
		switch r := m.rand.Float64(); {
		case r < 0.15:
			p.kind = jobs.KindRevoke
		case r < 0.30:
			p.kind, c.paid = jobs.KindRefund, true
		default:
			p.kind, p.dup = jobs.KindConfirm, m.rand.Float64() < 0.3 && tasks+2 <= n
		}
		cs = append(cs, c)
		plans = append(plans, p)
		tasks++
		if p.dup {
			tasks++
		}
	}
	orders, err := m.shop.reserve(ctx, cs)
	if err != nil {
		return nil, err
	}
	js := make([]job, 0, n)
	for i, c := range cs {
		o := orders[c.id]
		var j job
		switch plans[i].kind {
		case jobs.KindRevoke:
			// Its own task ID: the checkout's revoke, due in an hour,
			// holds "revoke:<order>".
			j.task, err = jobs.NewTask(ctx, jobs.RevokeArgs{OrderID: o.ID}, asynq.TaskID("revoke-now:"+o.ID))
			j.note = o.ID + ":revoked"
		case jobs.KindRefund:
			rid := o.ID + "-r"
			j.task, err = jobs.NewTask(ctx, jobs.RefundArgs{OrderID: o.ID, RefundID: rid, Amount: o.Amount, Currency: o.Currency})
			j.note = o.ID + ":refunded:" + rid
		default:
			j.task, err = confirmTask(ctx, o, "a")
			j.note = o.ID + ":confirmed"
		}
		if err != nil {
			return nil, err
		}
		js = append(js, j)
		if plans[i].dup {
			dup, err := confirmTask(ctx, o, "b") // a no-op once either has run
			if err != nil {
				return nil, err
			}
			js = append(js, job{task: dup})
		}
	}
	m.rand.Shuffle(len(js), func(a, b int) { js[a], js[b] = js[b], js[a] })
	return js, nil
}

func confirmTask(ctx context.Context, o *ledger.Order, webhook string) (*asynq.Task, error) {
	return jobs.NewTask(ctx, jobs.ConfirmArgs{OrderID: o.ID, WebhookID: o.ID + "-" + webhook, Amount: o.Amount, Currency: o.Currency})
}

// hotBatch is many tasks on few orders, all paid: webhooks the gateway
// repeats (no-ops), revokes that find the order paid (no-ops), and
// refunds of one cent each, which commit and hold the order's lock across
// the gateway's latency.
func (m *mix) hotBatch(ctx context.Context, n int) ([]job, error) {
	if m.hot == nil {
		cs := make([]checkout, m.hotOrders)
		for i := range cs {
			cs[i] = checkout{id: fmt.Sprintf("%s-hot-%03d", m.prefix, i), items: []ledger.Item{{TicketType: ticketTypeID(i), Quantity: 1}}, paid: true}
		}
		orders, err := m.shop.reserve(ctx, cs)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			m.hot = append(m.hot, orders[c.id])
		}
	}
	js := make([]job, n)
	for i := range js {
		m.seq++
		o := m.hot[m.rand.IntN(len(m.hot))]
		var err error
		switch m.seq % 3 {
		case 0:
			js[i].task, err = confirmTask(ctx, o, fmt.Sprintf("w%d", m.seq))
		case 1:
			rid := fmt.Sprintf("%s-r%d", o.ID, m.seq)
			js[i].task, err = jobs.NewTask(ctx, jobs.RefundArgs{OrderID: o.ID, RefundID: rid, Amount: 1, Currency: o.Currency})
			js[i].note = o.ID + ":refunded:" + rid
		default:
			js[i].task, err = jobs.NewTask(ctx, jobs.RevokeArgs{OrderID: o.ID}, asynq.TaskID(fmt.Sprintf("revoke:%s-%d", o.ID, m.seq)))
		}
		if err != nil {
			return nil, err
		}
	}
	return js, nil
}
