// Package gateway is the payment gateway of the shop: it captures and
// refunds money for orders, and its ledger is the ground truth that the
// order ledger is checked against. [Simulator] keeps that ledger in Redis,
// so that every worker process shares it, and can add latency and outages.
//
//	gw, err := gateway.NewSimulator(rdb, gateway.Config{Latency: 50 * time.Millisecond, FailureRate: 0.05})
//	if err != nil {
//		return err
//	}
//	// The key is the job's, so a retried job reuses it.
//	p, err := gw.Capture(ctx, "payment:confirm:"+taskID, orderID, 4900, "EUR")
//	if err != nil {
//		return err // ErrUnavailable: retry with the same key; the money moves at most once
//	}
//	return orders.MarkPaid(ctx, orderID, p.ID)
//
// # Idempotency
//
// Every call carries an idempotency key. The first call that moves money
// binds the key to its order, kind, amount and currency; a later call with
// the same key and parameters returns the same [Payment] and moves nothing,
// and one with other parameters fails with [ErrKeyReused]. A call refused
// by the rules records nothing, so its key stays free. Capture and Refund
// each run one Lua script that looks the key up, applies the rules and
// records the payment atomically, so concurrent calls with one key move
// money once.
//
// # Rules
//
// An order's refunds never exceed its captures ([ErrExceedsCaptured]), and
// every capture and refund of an order uses the currency of its first
// capture ([ErrCurrency]). Amounts are in minor units and positive.
//
// # Outages
//
// [Config.FailureRate] makes a share of calls fail with [ErrUnavailable]:
// half before anything happened, half after the payment was recorded, as
// when a response is lost. A caller cannot tell which; it retries with the
// same key and gets the recorded payment, or moves the money then.
// [Config.Seed] makes the draws, and so a run, reproducible.
//
// # Keys
//
// Every key starts with [Config.Prefix]. An order's keys share the hash tag
// of its ID (braces and '%' in it percent-encoded), so the script that
// moves its money runs in one Redis Cluster slot and orders spread over the
// cluster:
//
//	{<order>}:idem:<key>   hash: the payment recorded under an idempotency key
//	{<order>}:order        hash: captured and refunded sums, currency
//	{<order>}:payments     list: payment IDs in record order
//	{<order>}:keys         hash: payment ID -> idempotency key
//	bound:<key>            string: the order an idempotency key was first sent for
//	orders                 set: order IDs the gateway was asked to move money for
//
// The last two are written before the script, outside it: an idempotency
// key is bound to the first order it is sent for, for good, even when that
// call moved nothing (within that order a refused call leaves it free), so
// that no key moves money for two orders; and Orders lists the orders of
// that set that have a payment.
package gateway
