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
// Every key starts with [Config.Prefix] and the hash tag "{ledger}", so a
// Redis Cluster keeps the whole ledger in one slot:
//
//	{ledger}:idem:<key>        hash: the payment recorded under an idempotency key
//	{ledger}:order:<order>     hash: captured and refunded sums, currency
//	{ledger}:payments:<order>  list: payment IDs in record order
//	{ledger}:keys:<order>      hash: payment ID -> idempotency key
//	{ledger}:orders            set: order IDs with a payment
package gateway
