package gateway_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/jobs/gateway"
)

func ExampleSimulator() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	gw, err := gateway.NewSimulator(rdb, gateway.Config{})
	if err != nil {
		panic(err)
	}
	p, err := gw.Capture(ctx, "payment:confirm:t-1", "order-42", 4900, "EUR")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Kind, p.Amount, p.Currency, "for", p.OrderID)

	// A retried job reuses its key: the same payment, no second movement.
	again, err := gw.Capture(ctx, "payment:confirm:t-1", "order-42", 4900, "EUR")
	fmt.Println("retry:", again == p, err)

	_, err = gw.Refund(ctx, "payment:refund:t-2", "order-42", 5000, "EUR")
	fmt.Println("too much:", errors.Is(err, gateway.ErrExceedsCaptured))
	if _, err := gw.Refund(ctx, "payment:refund:t-3", "order-42", 1500, "EUR"); err != nil {
		panic(err)
	}

	captured, refunded, err := gw.Ledger(ctx, "order-42")
	fmt.Println("ledger:", captured, refunded, err)
	// Output:
	// capture 4900 EUR for order-42
	// retry: true <nil>
	// too much: true
	// ledger: 4900 1500 <nil>
}
