package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/keyslot"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs/gateway"
)

// connect returns a new client of one Redis; each client has its own
// connection pool, as another worker process would.
type connect func(t *testing.T) redis.UniversalClient

func TestSimulator_Miniredis(t *testing.T) {
	t.Parallel()
	testSimulator(t, func(t *testing.T) connect {
		t.Helper()
		mr := redistest.Mini(t)
		return func(t *testing.T) redis.UniversalClient {
			t.Helper()
			rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { require.NoError(t, rdb.Close()) })
			return rdb
		}
	})
}

func TestSimulator_Redis(t *testing.T) {
	t.Parallel()
	// One server for the whole suite: every subtest keeps to its own prefix.
	srv := redistest.Server(t)
	testSimulator(t, func(*testing.T) connect {
		return func(t *testing.T) redis.UniversalClient {
			t.Helper()
			return srv.Client(t)
		}
	})
}

type testBundle struct {
	rdb    redis.UniversalClient
	prefix string
	sim    *gateway.Simulator
	// other returns another Simulator on the same ledger, through its own
	// client, as another worker process would have.
	other func(t *testing.T, cfg gateway.Config) *gateway.Simulator
}

var paymentID = regexp.MustCompile(`^pay_[0-9a-f]{16}$`)

// testSimulator runs the suite on the Redis that newServer gives each
// subtest.
func testSimulator(t *testing.T, newServer func(t *testing.T) connect) {
	t.Helper()
	// setup returns a Simulator with cfg on a ledger of the test's own:
	// cfg.Prefix, or one made of the test's name.
	setup := func(t *testing.T, cfg gateway.Config) *testBundle {
		t.Helper()
		if cfg.Prefix == "" {
			cfg.Prefix = "test:" + t.Name() + ":"
		}
		newClient := newServer(t)
		rdb := newClient(t)
		sim, err := gateway.NewSimulator(rdb, cfg)
		require.NoError(t, err)
		return &testBundle{
			rdb:    rdb,
			prefix: cfg.Prefix,
			sim:    sim,
			other: func(t *testing.T, other gateway.Config) *gateway.Simulator {
				t.Helper()
				other.Prefix = cfg.Prefix
				sim, err := gateway.NewSimulator(newClient(t), other)
				require.NoError(t, err)
				return sim
			},
		}
	}

	t.Run("CaptureIsIdempotent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		before := time.Now()
		p, err := b.sim.Capture(ctx, "confirm:1", "order-1", 4900, "EUR")
		require.NoError(t, err)
		require.Regexp(t, paymentID, p.ID)
		require.Equal(t, "confirm:1", p.Key)
		require.Equal(t, "order-1", p.OrderID)
		require.Equal(t, gateway.KindCapture, p.Kind)
		require.Equal(t, int64(4900), p.Amount)
		require.Equal(t, "EUR", p.Currency)
		require.WithinDuration(t, before, p.At, time.Minute)
		require.Equal(t, time.UTC, p.At.Location())

		again, err := b.sim.Capture(ctx, "confirm:1", "order-1", 4900, "EUR")
		require.NoError(t, err)
		require.Equal(t, p, again)
		fromOther, err := b.other(t, gateway.Config{}).Capture(ctx, "confirm:1", "order-1", 4900, "EUR")
		require.NoError(t, err)
		require.Equal(t, p, fromOther)

		requireLedger(t, b.sim, "order-1", 4900, 0)
		payments, err := b.sim.Payments(ctx, "order-1")
		require.NoError(t, err)
		require.Equal(t, []gateway.Payment{p}, payments)
	})

	t.Run("KeyReusedWithOtherParameters", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		p, err := b.sim.Capture(t.Context(), "k", "order-1", 1000, "EUR")
		require.NoError(t, err)
		for _, tt := range []struct {
			name string
			call func(ctx context.Context) (gateway.Payment, error)
		}{
			{"Amount", func(ctx context.Context) (gateway.Payment, error) {
				return b.sim.Capture(ctx, "k", "order-1", 999, "EUR")
			}},
			{"Order", func(ctx context.Context) (gateway.Payment, error) {
				return b.sim.Capture(ctx, "k", "order-2", 1000, "EUR")
			}},
			{"Currency", func(ctx context.Context) (gateway.Payment, error) {
				return b.sim.Capture(ctx, "k", "order-1", 1000, "USD")
			}},
			{"Kind", func(ctx context.Context) (gateway.Payment, error) {
				return b.sim.Refund(ctx, "k", "order-1", 1000, "EUR")
			}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				got, err := tt.call(t.Context())
				require.ErrorIs(t, err, gateway.ErrKeyReused)
				require.Zero(t, got)
			})
		}
		t.Cleanup(func() {
			// After the subtests: nothing moved but the first capture.
			ctx := context.WithoutCancel(t.Context())
			requireLedger(t, b.sim, "order-1", 1000, 0)
			requireLedger(t, b.sim, "order-2", 0, 0)
			payments, err := b.sim.Payments(ctx, "order-1")
			require.NoError(t, err)
			require.Equal(t, []gateway.Payment{p}, payments)
			requireOrders(t, b.sim, "order-1")
		})
	})

	t.Run("ConcurrentCallsWithOneKeyMoveOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		// Four processes, four goroutines each.
		sims := []*gateway.Simulator{b.sim, b.other(t, gateway.Config{}), b.other(t, gateway.Config{}), b.other(t, gateway.Config{})}
		const goroutines = 16
		got := make([]gateway.Payment, goroutines)
		errs := make([]error, goroutines)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				<-start
				got[g], errs[g] = sims[g%len(sims)].Capture(ctx, "confirm:1", "order-1", 2500, "EUR")
			})
		}
		close(start)
		wg.Wait()
		for g := range goroutines {
			require.NoError(t, errs[g])
			require.Equal(t, got[0], got[g])
		}
		requireLedger(t, b.sim, "order-1", 2500, 0)
		payments, err := b.sim.Payments(ctx, "order-1")
		require.NoError(t, err)
		require.Equal(t, []gateway.Payment{got[0]}, payments)
	})

	t.Run("RefundsStayWithinCaptures", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		_, err := b.sim.Refund(ctx, "refund:0", "order-1", 1, "EUR")
		require.ErrorIs(t, err, gateway.ErrExceedsCaptured, "nothing captured yet")

		_, err = b.sim.Capture(ctx, "capture:1", "order-1", 1000, "EUR")
		require.NoError(t, err)
		r1, err := b.sim.Refund(ctx, "refund:1", "order-1", 400, "EUR")
		require.NoError(t, err)
		require.Equal(t, gateway.KindRefund, r1.Kind)
		require.Equal(t, int64(400), r1.Amount)

		// 400 + 700 > 1000: the second refund is refused whole.
		_, err = b.sim.Refund(ctx, "refund:2", "order-1", 700, "EUR")
		require.ErrorIs(t, err, gateway.ErrExceedsCaptured)
		requireLedger(t, b.sim, "order-1", 1000, 400)

		// Up to exactly what was captured.
		_, err = b.sim.Refund(ctx, "refund:3", "order-1", 600, "EUR")
		require.NoError(t, err)
		requireLedger(t, b.sim, "order-1", 1000, 1000)
		_, err = b.sim.Refund(ctx, "refund:4", "order-1", 1, "EUR")
		require.ErrorIs(t, err, gateway.ErrExceedsCaptured)

		// A refused call recorded nothing, so its key is still free.
		_, err = b.sim.Capture(ctx, "capture:2", "order-1", 700, "EUR")
		require.NoError(t, err)
		r2, err := b.sim.Refund(ctx, "refund:2", "order-1", 700, "EUR")
		require.NoError(t, err)
		require.Equal(t, "refund:2", r2.Key)
		requireLedger(t, b.sim, "order-1", 1700, 1700)
	})

	t.Run("ConcurrentRefundsStayWithinCaptures", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		_, err := b.sim.Capture(ctx, "capture", "order-1", 1000, "EUR")
		require.NoError(t, err)
		other := b.other(t, gateway.Config{})
		const goroutines = 16
		errs := make([]error, goroutines)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range goroutines {
			sim := b.sim
			if g%2 == 1 {
				sim = other
			}
			wg.Go(func() {
				<-start
				_, errs[g] = sim.Refund(ctx, fmt.Sprintf("refund:%d", g), "order-1", 100, "EUR")
			})
		}
		close(start)
		wg.Wait()
		var refunded, refused int
		for _, err := range errs {
			switch {
			case err == nil:
				refunded++
			case errors.Is(err, gateway.ErrExceedsCaptured):
				refused++
			default:
				require.NoError(t, err)
			}
		}
		require.Equal(t, 10, refunded)
		require.Equal(t, 6, refused)
		requireLedger(t, b.sim, "order-1", 1000, 1000)
	})

	t.Run("CurrencyFollowsTheFirstCapture", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		_, err := b.sim.Capture(ctx, "capture:1", "order-1", 1000, "EUR")
		require.NoError(t, err)
		_, err = b.sim.Capture(ctx, "capture:2", "order-1", 1000, "USD")
		require.ErrorIs(t, err, gateway.ErrCurrency)
		_, err = b.sim.Refund(ctx, "refund:1", "order-1", 100, "USD")
		require.ErrorIs(t, err, gateway.ErrCurrency)
		requireLedger(t, b.sim, "order-1", 1000, 0)

		_, err = b.sim.Capture(ctx, "capture:3", "order-1", 500, "EUR")
		require.NoError(t, err)
		_, err = b.sim.Capture(ctx, "capture:4", "order-2", 500, "USD")
		require.NoError(t, err, "another order has its own currency")
		requireLedger(t, b.sim, "order-1", 1500, 0)
		requireLedger(t, b.sim, "order-2", 500, 0)
	})

	t.Run("LedgerListsPaymentsInRecordOrder", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		type call struct {
			kind     gateway.Kind
			key      string
			order    string
			amount   int64
			currency string
		}
		calls := []call{
			{gateway.KindCapture, "k1", "order-b", 1000, "EUR"},
			{gateway.KindCapture, "k2", "order-a", 500, "USD"},
			{gateway.KindRefund, "k3", "order-b", 300, "EUR"},
			{gateway.KindCapture, "k4", "order-b", 200, "EUR"},
			{gateway.KindRefund, "k5", "order-b", 900, "EUR"},
		}
		var want []gateway.Payment
		for _, c := range calls {
			move := b.sim.Capture
			if c.kind == gateway.KindRefund {
				move = b.sim.Refund
			}
			p, err := move(ctx, c.key, c.order, c.amount, c.currency)
			require.NoError(t, err)
			if c.order == "order-b" {
				want = append(want, p)
			}
		}
		got, err := b.sim.Payments(ctx, "order-b")
		require.NoError(t, err)
		require.Equal(t, want, got)
		for i := 1; i < len(got); i++ {
			require.False(t, got[i].At.Before(got[i-1].At), "payment %d recorded before %d", i, i-1)
		}
		requireLedger(t, b.sim, "order-b", 1200, 1200)
		requireLedger(t, b.sim, "order-a", 500, 0)
		requireOrders(t, b.sim, "order-a", "order-b")

		requireLedger(t, b.sim, "order-none", 0, 0)
		none, err := b.sim.Payments(ctx, "order-none")
		require.NoError(t, err)
		require.Empty(t, none)
	})

	t.Run("FailuresAreSeededAndSplit", func(t *testing.T) {
		t.Parallel()
		const calls = 32
		// run makes calls captures, each on an order of its own, through a
		// Simulator that always fails, and tells which were recorded. A
		// second Simulator on the same ledger, without failures, retries.
		run := func(t *testing.T, prefix string, seed uint64) []bool {
			t.Helper()
			b := setup(t, gateway.Config{Prefix: prefix, FailureRate: 1, Seed: seed})
			clean := b.other(t, gateway.Config{})
			ctx := t.Context()
			recorded := make([]bool, calls)
			for i := range calls {
				key, order := fmt.Sprintf("confirm:%d", i), fmt.Sprintf("order-%d", i)
				got, err := b.sim.Capture(ctx, key, order, 100, "EUR")
				require.ErrorIs(t, err, gateway.ErrUnavailable)
				require.Zero(t, got)
				before, err := clean.Payments(ctx, order)
				require.NoError(t, err)
				recorded[i] = len(before) == 1

				// The retry returns what was recorded, or records it now.
				p, err := clean.Capture(ctx, key, order, 100, "EUR")
				require.NoError(t, err)
				if recorded[i] {
					require.Equal(t, before[0], p)
				}
				requireLedger(t, clean, order, 100, 0)
				after, err := clean.Payments(ctx, order)
				require.NoError(t, err)
				require.Equal(t, []gateway.Payment{p}, after)
			}
			return recorded
		}
		first := run(t, "test:"+t.Name()+":first:", 7)
		require.Contains(t, first, true, "no call failed after recording")
		require.Contains(t, first, false, "no call failed before recording")
		again := run(t, "test:"+t.Name()+":again:", 7)
		require.Equal(t, first, again, "same seed, other outcomes")
		other := run(t, "test:"+t.Name()+":other:", 8)
		require.NotEqual(t, first, other, "other seed, same outcomes")
	})

	t.Run("FailuresAfterRecordingHideRefusals", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		// A twin with the same seed shows that the first draw fails after
		// the script ran.
		twin := setup(t, gateway.Config{Prefix: "test:" + t.Name() + ":twin:", FailureRate: 1, Seed: 7})
		_, err := twin.sim.Capture(ctx, "confirm:1", "order-1", 100, "EUR")
		require.ErrorIs(t, err, gateway.ErrUnavailable)
		requireLedger(t, twin.sim, "order-1", 100, 0)

		b := setup(t, gateway.Config{FailureRate: 1, Seed: 7})
		_, err = b.sim.Refund(ctx, "refund:1", "order-1", 100, "EUR")
		require.ErrorIs(t, err, gateway.ErrUnavailable)
		require.NotErrorIs(t, err, gateway.ErrExceedsCaptured)
		clean := b.other(t, gateway.Config{})
		_, err = clean.Refund(ctx, "refund:1", "order-1", 100, "EUR")
		require.ErrorIs(t, err, gateway.ErrExceedsCaptured)
		requireOrders(t, clean)
	})

	t.Run("LatencyHonoursContext", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{Latency: time.Hour})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := b.sim.Capture(ctx, "confirm:1", "order-1", 100, "EUR")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 10*time.Second)

		cause := errors.New("job lost its lease")
		ctx, cancelCause := context.WithCancelCause(t.Context())
		done := make(chan error, 1)
		go func() {
			_, err := b.sim.Refund(ctx, "refund:1", "order-1", 100, "EUR")
			done <- err
		}()
		cancelCause(cause)
		select {
		case err := <-done:
			require.ErrorIs(t, err, cause)
		case <-time.After(10 * time.Second):
			t.Fatal("Refund did not return after its context was cancelled")
		}

		ctx, cancel = context.WithCancel(t.Context())
		cancel()
		_, err = b.sim.Capture(ctx, "confirm:2", "order-1", 100, "EUR")
		require.ErrorIs(t, err, context.Canceled)

		requireLedger(t, b.sim, "order-1", 0, 0)
		requireOrders(t, b.sim)

		short := b.other(t, gateway.Config{Latency: time.Millisecond})
		_, err = short.Capture(t.Context(), "confirm:3", "order-1", 100, "EUR")
		require.NoError(t, err)
		requireLedger(t, b.sim, "order-1", 100, 0)
	})

	t.Run("InvalidArgumentsTouchNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		for _, tt := range []struct {
			name, key, order string
			amount           int64
			currency         string
		}{
			{"EmptyKey", "", "order-1", 100, "EUR"},
			{"EmptyOrder", "k", "", 100, "EUR"},
			{"ZeroAmount", "k", "order-1", 0, "EUR"},
			{"NegativeAmount", "k", "order-1", -100, "EUR"},
			{"HugeAmount", "k", "order-1", math.MaxInt64, "EUR"},
			{"EmptyCurrency", "k", "order-1", 100, ""},
			{"LowerCaseCurrency", "k", "order-1", 100, "eur"},
			{"ShortCurrency", "k", "order-1", 100, "EU"},
			{"LongCurrency", "k", "order-1", 100, "EURO"},
			{"NonLetterCurrency", "k", "order-1", 100, "E1R"},
			{"NonASCIICurrency", "k", "order-1", 100, "€"},
		} {
			_, err := b.sim.Capture(ctx, tt.key, tt.order, tt.amount, tt.currency)
			require.ErrorIs(t, err, gateway.ErrInvalid, "capture %s", tt.name)
			_, err = b.sim.Refund(ctx, tt.key, tt.order, tt.amount, tt.currency)
			require.ErrorIs(t, err, gateway.ErrInvalid, "refund %s", tt.name)
		}
		_, _, err := b.sim.Ledger(ctx, "")
		require.ErrorIs(t, err, gateway.ErrInvalid)
		_, err = b.sim.Payments(ctx, "")
		require.ErrorIs(t, err, gateway.ErrInvalid)
		keys, err := b.rdb.Keys(ctx, b.prefix+"*").Result()
		require.NoError(t, err)
		require.Empty(t, keys)
	})

	t.Run("AnOrdersKeysShareItsHashTag", func(t *testing.T) {
		t.Parallel()
		newClient := newServer(t)
		for _, prefix := range []string{"", "test:" + t.Name() + ":"} {
			rdb := newClient(t)
			redistest.CheckSlots(t, rdb) // the move script's keys: one slot
			sim, err := gateway.NewSimulator(rdb, gateway.Config{Prefix: prefix})
			require.NoError(t, err)
			ctx := t.Context()
			// "}x" would leave an empty tag, and so no tag, unescaped.
			for _, order := range []string{"order-1", "order-2", "}x", "a{b}"} {
				_, err = sim.Capture(ctx, "k1:"+order, order, 100, "EUR")
				require.NoError(t, err)
				_, err = sim.Refund(ctx, "k2:"+order, order, 50, "EUR")
				require.NoError(t, err)
				requireLedger(t, sim, order, 100, 50)
			}
			requireOrders(t, sim, "a{b}", "order-1", "order-2", "}x")
			if prefix == "" {
				prefix = gateway.DefaultPrefix
			}
			keys, err := newClient(t).Keys(ctx, prefix+"*").Result()
			require.NoError(t, err)
			// Per order: two records, its totals, payment IDs and keys,
			// and two bound keys; and the set of orders.
			require.Len(t, keys, 4*7+1)
			slots := map[string]int{}
			for _, order := range []string{"order-1", "order-2"} {
				tag := prefix + "{" + order + "}:"
				for _, k := range keys {
					if strings.HasPrefix(k, tag) {
						slots[order]++
						require.Equal(t, keyslot.Of(tag), keyslot.Of(k), "%s is not in its order's slot", k)
					}
				}
			}
			require.Equal(t, map[string]int{"order-1": 5, "order-2": 5}, slots)
			require.NotEqual(t, keyslot.Of("{order-1}"), keyslot.Of("{order-2}"), "orders spread over slots")
		}
	})

	t.Run("AKeyStaysWithTheFirstOrderItWasSentFor", func(t *testing.T) {
		t.Parallel()
		b := setup(t, gateway.Config{})
		ctx := t.Context()
		_, err := b.sim.Refund(ctx, "k", "order-1", 100, "EUR")
		require.ErrorIs(t, err, gateway.ErrExceedsCaptured)
		_, err = b.sim.Capture(ctx, "k", "order-2", 100, "EUR")
		require.ErrorIs(t, err, gateway.ErrKeyReused, "a key moving money for a second order")
		require.ErrorContains(t, err, `first sent for order "order-1"`)
		_, err = b.sim.Capture(ctx, "k", "order-1", 100, "EUR")
		require.NoError(t, err, "within its order a refused call leaves the key free")
		requireLedger(t, b.sim, "order-2", 0, 0)
		requireOrders(t, b.sim, "order-1")
	})
}

func TestNewSimulator_Config(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	for _, tt := range []struct {
		name string
		cfg  gateway.Config
	}{
		{"NegativeFailureRate", gateway.Config{FailureRate: -0.1}},
		{"FailureRateAboveOne", gateway.Config{FailureRate: 1.1}},
		{"NaNFailureRate", gateway.Config{FailureRate: math.NaN()}},
		{"NegativeLatency", gateway.Config{Latency: -time.Second}},
		{"HugeLatency", gateway.Config{Latency: math.MaxInt64}},
		{"PrefixWithBrace", gateway.Config{Prefix: "shop:{a}:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := gateway.NewSimulator(rdb, tt.cfg)
			require.ErrorIs(t, err, gateway.ErrInvalid)
		})
	}
	t.Run("NilClient", func(t *testing.T) {
		t.Parallel()
		_, err := gateway.NewSimulator(nil, gateway.Config{})
		require.ErrorIs(t, err, gateway.ErrInvalid)
	})
	t.Run("Bounds", func(t *testing.T) {
		t.Parallel()
		_, err := gateway.NewSimulator(rdb, gateway.Config{FailureRate: 1, Latency: time.Second, Prefix: "shop:"})
		require.NoError(t, err)
	})
}

func TestPayment_LogValue(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	p := gateway.Payment{
		ID: "pay_0123456789abcdef", Key: "k", OrderID: "order-1", Kind: gateway.KindRefund,
		Amount: 250, Currency: "EUR", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	logger.InfoContext(t.Context(), "refunded", slog.Any("payment", p))
	require.JSONEq(t, `{"level":"INFO","msg":"refunded","payment":{"id":"pay_0123456789abcdef","key":"k",
		"order_id":"order-1","kind":"refund","amount":250,"currency":"EUR","at":"2026-01-02T03:04:05Z"}}`, buf.String())
}

func requireLedger(t *testing.T, sim *gateway.Simulator, order string, captured, refunded int64) {
	t.Helper()
	c, r, err := sim.Ledger(context.WithoutCancel(t.Context()), order)
	require.NoError(t, err)
	require.Equal(t, captured, c, "captured for %s", order)
	require.Equal(t, refunded, r, "refunded for %s", order)
}

func requireOrders(t *testing.T, sim *gateway.Simulator, want ...string) {
	t.Helper()
	got, err := sim.Orders(context.WithoutCancel(t.Context()))
	require.NoError(t, err)
	if len(want) == 0 {
		require.Empty(t, got)
		return
	}
	require.Equal(t, want, got)
}
