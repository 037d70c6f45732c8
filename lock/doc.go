// Package lock provides leases on resources kept in Redis: mutual exclusion
// across processes with tight TTLs, fencing tokens and fair hand-off. It
// needs Redis 7.0 or later, whose SET takes NX with GET.
//
//	locker, err := lock.New(rdb, lock.Config{TTL: 10 * time.Second, Wait: time.Second})
//	if err != nil {
//		return err
//	}
//	defer locker.Close()
//
//	lease, err := locker.Acquire(ctx, lock.Key("order", orderID), lock.Key("ticket_type", typeID, "inventory"))
//	if err != nil {
//		return err // a *lock.BusyError when another owner kept a resource past the wait
//	}
//	defer lease.Release(ctx) // detached from ctx: a cancelled job still releases
//	return store.Save(ctx, order, lease.Fence(lock.Key("order", orderID)))
//
// # Contract
//
// A lease is owned by a 128-bit random token that only its holder knows; the
// Locker keeps no per-lease state, so concurrent callers cannot mix tokens.
// Acquire is one round trip (per slot, on Cluster): a script that sets every key only if absent,
// with the TTL in the same command, bumps each resource's fencing counter
// and, on failure, reports the holder's remaining TTL. Several resources are
// taken all or none (sorted, so two callers never deadlock). Release is a
// compare-and-delete by token, Extend a compare-and-pexpire; both are one
// round trip and neither touches a lock that is no longer the caller's.
//
// # Waiting
//
// A caller that may wait joins a FIFO queue kept next to the lock. Release
// hands the lock straight to the first waiter whose Locker is still
// subscribed and publishes a grant on that Locker's one subscription, so a
// contended acquisition costs the same two round trips as an uncontended
// one, waiters are served in arrival order, and no release wakes a herd. A
// waiter whose process died is skipped at once (its subscription died with
// it); one that gives up leaves the queue and returns anything handed to
// it. Expired holders and missed grants are caught by a fallback retry timed
// by the holder's TTL, and by jittered exponential backoff while the
// subscription is down.
//
// Callers of one process that wait for the same resources form a cohort:
// only its first asks Redis; the others wait in line in-process, and a
// release passes the lease straight to the next of them, with no round
// trip, up to Options.Cohort times in a row before the resources go back
// through Redis to the other processes' waiters. A passed lease keeps the
// lock's token and validity, carries the next fence, and is never a lease
// that was lost.
//
// A caller that cannot wait in the queue, such as a job parked until the
// resource is free, marks it with Locker.Want; releases report the mark in
// Lease.Wanted, so the releaser can tell it, until Lease.ClearWanted.
//
// # Fencing
//
// A TTL cannot stop a holder that pauses (GC, SIGSTOP, a slow network) past
// it. Lease.Fence returns a token larger than every earlier lease's on the
// same resource, passed or not, also after a restart or a failover that lost the counter's
// last writes (a fence is at least the server's clock in µs). A store that
// learns the token at the holder's first access, read or write, and refuses
// any later access with a lower one makes the late holder harmless; checking
// writes alone is not enough (an older holder that read before a newer one
// and commits first undoes the newer one's view).
//
// # Deployments
//
// New takes a single-node, Sentinel or Cluster client. Every key of a
// resource shares one hash tag, so each script runs on one slot; on Cluster
// an Acquire of resources in several slots sends one script per slot, in
// name order, all or none. NewQuorum spans independent masters with the
// Redlock algorithm.
package lock
