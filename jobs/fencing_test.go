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
