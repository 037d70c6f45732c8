// Package chaos is turnstile's fault suite: its tests run real "turnstile
// worker" processes against a redis-server of their own, drive the shop's
// conflicting workload at them, and kill (SIGKILL) or pause (SIGSTOP, for
// two to three lock TTLs) workers on a schedule drawn from a seed. After
// each run they check the books (jobs.Check), that no task was lost, that
// no lock, waiter queue, wanted mark or parked list outlived its TTL, and
// that a paused worker's late writes were refused by the fences.
//
// The package has no API: everything is in its tests. "go test ./chaos"
// runs one short seeded run of each fault kind (CI); "make chaos" runs
// longer ones and prints a table; "make chaos SEED=n" repeats one seed.
//
// Environment:
//
//	CHAOS_SEED  the seed of every run (default: one from the clock, printed)
//	CHAOS_LONG  true: more and longer runs per fault kind
//	SOAK        true: TestSoak runs (make soak), for SOAK_DURATION (default 10m)
package chaos
