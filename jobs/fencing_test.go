package jobs_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/gateway"
	"github.com/turnstilehq/turnstile/jobs/ledger"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
)

// pausingGateway stops the first capture until resumed, as a GC pause or a
// stalled network would.
type pausingGateway struct {
	gateway.Gateway
	once           sync.Once
	paused, resume chan struct{}
}

func (g *pausingGateway) Capture(ctx context.Context, key, orderID string, amount int64, currency string) (gateway.Payment, error) {
	g.once.Do(func() {
		close(g.paused)
		<-g.resume
	})
	return g.Gateway.Capture(ctx, key, orderID, amount, currency)
}

// A handler paused past its lease writes after another worker has done the
// job: the store refuses its stale fence, and the books stay right.
func TestFencing_PausedHolderIsRefused(t *testing.T) {
	t.Parallel()
	s := newShop(t, redistest.Server(t).Client(t))
	o := s.reserve(t, "o-1", gold(2))
	args := jobs.ConfirmArgs{OrderID: o.ID, WebhookID: "wh-1", Amount: o.Amount, Currency: o.Currency}

	pausing := &pausingGateway{Gateway: s.gw, paused: make(chan struct{}), resume: make(chan struct{})}
	slow := *s.svc
	slow.Gateway = pausing
	short, err := s.locker.With(lock.Options{TTL: 200 * time.Millisecond})
	require.NoError(t, err)
	first, err := short.Acquire(t.Context(), lock.Key("order", o.ID))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- slow.Confirm(middleware.WithLease(t.Context(), first), args) }()

	<-pausing.paused
	<-first.Done() // its TTL ran out while it was paused
	require.NoError(t, run(t, s, o.ID, s.svc.Confirm, args), "the next worker does the job")
	close(pausing.resume)

	err = <-done
	require.ErrorIs(t, err, ledger.ErrStaleFence, "the paused holder's late write must be refused")
	got := s.order(t, o.ID)
	require.Equal(t, ledger.StatePaid, got.State)
	captured, _ := s.money(t, o.ID)
	require.Equal(t, o.Amount, captured, "captured once")
	r := s.check(t)
	require.True(t, r.OK, "%+v", r.Violations)
}

// pausingStore stops a job's Commit until the test lets it go: the job has
// read and computed its write, then stalls (GC, a slow network) before the
// write reaches the store.
type pausingStore struct {
	jobs.Store
	once             sync.Once
	atCommit, resume chan struct{}
	free             func() // lets the paused Commit go; idempotent
}

func newPausingStore(t *testing.T, st jobs.Store) *pausingStore {
	t.Helper()
	p := &pausingStore{Store: st, atCommit: make(chan struct{}), resume: make(chan struct{})}
	var free sync.Once
	p.free = func() { free.Do(func() { close(p.resume) }) }
	t.Cleanup(p.free) // a failed test must not leave a job parked here
	return p
}

func (p *pausingStore) Commit(ctx context.Context, fences []ledger.Fence, ch ledger.Change) error {
	p.once.Do(func() {
		close(p.atCommit)
		<-p.resume
	})
	return p.Store.Commit(ctx, fences, ch)
}

// within waits for ch, failing the test after 10 s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// The older holder reads, stalls past its lease, and commits late, while the
// newer holder has read the same data and stalls before its own commit. The
// newer holder's read must fence the older one out: if both commits land, the
// older one's work is silently lost (two checkouts each compute their new
// availability from the same count; two partial refunds each write the
// refunded total and refund list without the other's).
func TestFencing_LateCommitAfterANewerRead(t *testing.T) {
	t.Parallel()

	// holders runs older, then newer once older is parked at its commit
	// (newer's lock acquisition waits out older's short lease), then lets
	// older commit, then newer. It returns older's and newer's errors.
	holders := func(t *testing.T, older, newer func(st jobs.Store) error, s *shop) (error, error) {
		t.Helper()
		o, n := newPausingStore(t, s.svc.Store), newPausingStore(t, s.svc.Store)
		oDone, nDone := make(chan error, 1), make(chan error, 1)
		go func() { oDone <- older(o) }()
		within(t, o.atCommit, "the older holder to reach its commit")
		go func() { nDone <- newer(n) }()
		select { // newer reads only once older's lease has run out
		case <-n.atCommit:
		case err := <-nDone:
			t.Fatalf("the newer holder ended before its commit: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the newer holder to reach its commit")
		}
		o.free()
		oErr := within(t, oDone, "the older holder's commit")
		n.free()
		return oErr, within(t, nDone, "the newer holder's commit")
	}

	t.Run("Checkouts", func(t *testing.T) {
		t.Parallel()
		s := newShop(t, redistest.Server(t).Client(t))
		short, err := s.locker.With(lock.Options{TTL: 300 * time.Millisecond, Wait: 5 * time.Second})
		require.NoError(t, err)
		reserve := func(locker *lock.Locker, id string, n int64) func(jobs.Store) error {
			return func(st jobs.Store) error {
				svc := *s.svc
				svc.Store, svc.Locker = st, locker
				_, err := svc.Reserve(t.Context(), id, []ledger.Item{gold(n)})
				return err
			}
		}
		olderErr, newerErr := holders(t, reserve(short, "o-old", 2), reserve(s.locker, "o-new", 3), s)

		r := s.check(t)
		require.True(t, r.OK, "the older checkout's late commit undid the newer one's read: %+v", r.Violations)
		require.NoError(t, newerErr)
		require.ErrorIs(t, olderErr, ledger.ErrStaleFence)
		require.Equal(t, int64(7), s.goldLeft(t))
	})

	t.Run("PartialRefunds", func(t *testing.T) {
		t.Parallel()
		s := newShop(t, redistest.Server(t).Client(t))
		o := s.reserve(t, "o-1", gold(2))
		require.NoError(t, s.confirm(t, o, "wh-1"))
		short, err := s.locker.With(lock.Options{TTL: 300 * time.Millisecond, Wait: 5 * time.Second})
		require.NoError(t, err)
		refund := func(locker *lock.Locker, id string) func(jobs.Store) error {
			return func(st jobs.Store) error {
				lease, err := locker.Acquire(t.Context(), lock.Key("order", o.ID))
				if err != nil {
					return err
				}
				defer func() { _ = lease.Release(context.WithoutCancel(t.Context())) }() // the older one's is gone by then
				svc := *s.svc
				svc.Store = st
				return svc.Refund(middleware.WithLease(t.Context(), lease), jobs.RefundArgs{OrderID: o.ID, RefundID: id, Amount: 1000, Currency: o.Currency})
			}
		}
		olderErr, newerErr := holders(t, refund(short, "r-old"), refund(s.locker, "r-new"), s)
		require.NoError(t, newerErr)
		if olderErr != nil {
			// The refused job is retried, as asynq would: the gateway's
			// idempotency key returns its earlier refund, and the order
			// records it.
			require.ErrorIs(t, olderErr, ledger.ErrStaleFence)
			require.NoError(t, run(t, s, o.ID, s.svc.Refund, jobs.RefundArgs{OrderID: o.ID, RefundID: "r-old", Amount: 1000, Currency: o.Currency}))
		}

		r := s.check(t)
		require.True(t, r.OK, "the older refund's late commit undid the newer one's read: %+v", r.Violations)
		got := s.order(t, o.ID)
		require.ElementsMatch(t, []string{"r-old", "r-new"}, got.Refunds)
		require.Equal(t, int64(2000), got.Refunded)
		_, refunded := s.money(t, o.ID)
		require.Equal(t, int64(2000), refunded, "refunded once each")
	})
}
