package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// TURNSTILE_SWEEP_EVERY sets how often a worker sweeps: the robustness
// suite wants what a killed worker left swept within its runs, not a
// minute later.
func TestWorker_SweepEvery(t *testing.T) {
	t.Parallel()

	t.Run("ParsesTheVariable", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			env  string
			want time.Duration
			err  string
		}{
			{env: "", want: 0},
			{env: "2s", want: 2 * time.Second},
			{env: "soon", err: `TURNSTILE_SWEEP_EVERY="soon"`},
			{env: "0s", err: "not positive"},
			{env: "-1m", err: "not positive"},
		} {
			var got sweepEvery
			app := fx.New(fx.NopLogger,
				sweepPeriod(func(k string) string { return map[string]string{envSweepEvery: tc.env}[k] }),
				fx.Invoke(func(in struct {
					fx.In
					Every sweepEvery `optional:"true"`
				},
				) {
					got = in.Every
				}))
			if tc.err != "" {
				require.ErrorContains(t, app.Err(), tc.err, "%q", tc.env)
				continue
			}
			require.NoError(t, app.Err(), "%q", tc.env)
			require.Equal(t, tc.want, time.Duration(got), "%q", tc.env)
		}
	})

	t.Run("ABadValueStopsTheStart", func(t *testing.T) {
		t.Parallel()
		var logs syncBuffer
		env := map[string]string{envSweepEvery: "soon", "TURNSTILE_ADMIN_ADDR": freeAddr(t)}
		c := &cli{ctx: t.Context(), stdout: &logs, stderr: &logs, getenv: func(k string) string { return env[k] }, taskTypes: taskTypes(), serve: serveShop()}
		require.Equal(t, exitError, c.run([]string{"worker"}))
		require.Contains(t, logs.String(), envSweepEvery)
		var help strings.Builder
		c = &cli{ctx: t.Context(), stdout: &help, stderr: &help, getenv: func(string) string { return "" }}
		require.Equal(t, exitOK, c.run([]string{"worker", "-h"}))
		require.Contains(t, help.String(), envSweepEvery)
	})

	// A worker killed between a job's commit and its delivery left a
	// notification pending; a worker sweeping every TURNSTILE_SWEEP_EVERY
	// delivers it.
	t.Run("AWorkerDeliversWhatADeadOneLeft", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Server(t)
		rdb := srv.Client(t)
		store := ledger.New(rdb, "")
		o := &ledger.Order{ID: "o-1", Amount: 2500, Currency: "EUR", State: ledger.StatePaid, Created: time.Now().UTC()}
		note := ledger.Notification{ID: "o-1:confirmed", OrderID: "o-1", Kind: "confirmed"}
		require.NoError(t, store.Commit(t.Context(), nil, ledger.Change{Order: o, Outbox: []ledger.Notification{note}}))
		// Committed a minute ago: past any grace.
		require.NoError(t, rdb.ZAddXX(t.Context(), ledger.DefaultPrefix+"{ledger}:undelivered",
			redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: o.ID}).Err())

		env := map[string]string{
			"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_ADMIN_ADDR": freeAddr(t), envSweepEvery: "50ms",
		}
		ctx, stop := context.WithCancel(t.Context())
		var logs syncBuffer
		exited := make(chan int, 1)
		go func() {
			c := &cli{ctx: ctx, stdout: &logs, stderr: &logs, getenv: func(k string) string { return env[k] }, taskTypes: taskTypes(), serve: serveShop()}
			exited <- c.run([]string{"worker"})
		}()
		require.Eventually(t, func() bool {
			_, delivered, err := store.Outbox(t.Context())
			return err == nil && delivered[note.ID] == 1
		}, 10*time.Second, 20*time.Millisecond, "the notification was not swept; log:\n%s", &logs)
		stop()
		select {
		case code := <-exited:
			require.Equal(t, exitOK, code, logs.String())
		case <-time.After(30 * time.Second):
			t.Fatal("the worker did not stop")
		}
		require.Contains(t, logs.String(), "left undelivered")
	})
}
