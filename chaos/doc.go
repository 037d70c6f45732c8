// Package chaos is turnstile's fault suite: its tests run real "turnstile
// worker" processes against a redis-server of their own, each worker
// behind its own TCP proxy (internal/netfault), drive the shop's
// conflicting workload at them, and strike on a schedule drawn from a
// seed: SIGKILL, SIGSTOP for two to three lock TTLs, and, through a
// worker's proxy, added latency, connection resets, a blackhole (bytes
// swallowed, the connection left open) and slow closes; and restarts of
// Redis itself, a crash that loses the last second (append-only file,
// everysec) and a wipe (no persistence). After each run they check the
// books (jobs.Check), the ledger's fenced reads and commits for
// linearizability across the restarts (porcupine, internal/history),
// that no fence was handed out again after a restart, that no two
// holders overlapped, that no task was lost but with Redis, that every
// notification was delivered once, and that no lock, waiter queue,
// wanted mark or parked list outlived its TTL.
//
// The package has no API: everything is in its tests. "go test ./chaos"
// runs one short seeded run of each fault kind (CI); "make chaos" runs
// longer ones and prints a table; "make chaos SEED=n" repeats one seed;
// "make soak" runs TestSoak.
//
// Environment:
//
//	CHAOS_SEED     the seed of every run (default: one from the clock, printed)
//	CHAOS_LONG     true: more and longer runs per fault kind
//	CHAOS_BIN      a turnstile binary to run instead of building cmd/turnstile
//	CHAOS_KEEP     a directory that keeps the workers' logs and histories
//	CHAOS_MUTANTS  true: TestChaosMutants builds broken binaries and expects the checks to fail
//	SOAK           true: TestSoak runs (make soak), for SOAK_DURATION (default 10m)
package chaos
