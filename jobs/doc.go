// Package jobs holds the shop's three lock-guarded jobs over its order
// ledger (package ledger) and payment gateway (package gateway): payment
// confirmation (payment:confirm), refund (payment:refund) and revoke
// (order:revoke), with their typed payloads, the checkout that reserves
// orders, and the invariant checker.
//
// A producer builds a task from typed args and enqueues it with asynq:
//
//	task, err := jobs.NewTask(ctx, jobs.RefundArgs{OrderID: id, RefundID: reqID, Amount: 500, Currency: "EUR"})
//	if err != nil { return err } // a *middleware.PayloadError names the field
//	info, err := client.EnqueueContext(ctx, task) // asynq.ErrTaskIDConflict: the same refund request is queued
//
// A worker serves them through worker.ProvideTaskTypes:
//
//	svc := &jobs.Service{Store: ledger.New(rdb, ""), Gateway: gw, Locker: locker, Client: client}
//	fx.New(worker.Options(cfg, logger, worker.ProvideTaskTypes(svc.TaskTypes)))
//
// Each handler is the same short sequence: load the order, check its
// state, call the gateway where money moves, commit the new state with the
// fencing tokens of the locks it holds, and send the notifications once the
// locks are released (what a worker that died in between left,
// Service.SweepOutbox sends). The worker's guard holds the order's lock; a job that
// changes inventory takes the ticket types' inventory locks too, always
// after the order's. An order's ticket types are all of one event
// (ErrMixedEvents otherwise), so that its commit, which touches the order
// and those inventories, stays in the event's Redis Cluster slot; tasks
// carry only the order ID, and the ledger finds the event from it. The
// lock is what makes the sequence safe with a gateway call in the middle:
// Service.NoLock runs it without, and Check then finds what breaks.
package jobs
