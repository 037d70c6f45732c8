package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/turnstilehq/turnstile/lock"
)

func ExampleLocker_Acquire() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	locker, err := lock.New(rdb, lock.Config{TTL: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	defer locker.Close()

	lease, err := locker.Acquire(ctx, lock.Key("order", 42), lock.Key("ticket_type", 7, "inventory"))
	if err != nil {
		panic(err)
	}
	fmt.Println("held:", lease.Resources())

	_, err = locker.Acquire(ctx, lock.Key("order", 42))
	if be, ok := errors.AsType[*lock.BusyError](err); ok {
		fmt.Println("busy:", be.Resource, "for about", be.TTL.Round(time.Second))
	}

	if err := lease.Release(ctx); err != nil {
		panic(err)
	}
	fmt.Println("released")
	// Output:
	// held: [order:42 ticket_type:7:inventory]
	// busy: order:42 for about 10s
	// released
}

func ExampleLease_Done() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	// With Refresh the lease extends itself until Release; Done closes if it
	// cannot, and the work it guards must stop.
	locker, _ := lock.New(rdb, lock.Config{TTL: 3 * time.Second, Refresh: true})
	defer locker.Close()
	lease, err := locker.Acquire(ctx, lock.Key("refund", "r-1"))
	if err != nil {
		panic(err)
	}
	work := time.After(10 * time.Millisecond)
	select {
	case <-work:
		fmt.Println("work done while held")
	case <-lease.Done():
		fmt.Println("lost:", lease.Err())
	}
	fmt.Println(lease.Release(ctx))
	// Output:
	// work done while held
	// <nil>
}

func ExampleLocker_Want() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	locker, _ := lock.New(rdb, lock.Config{})
	defer locker.Close()
	seat := lock.Key("seat", "A12")
	lease, err := locker.Acquire(ctx, seat)
	if err != nil {
		panic(err)
	}

	// A job that finds the seat busy does not wait in the queue: it asks to
	// be told, and goes away.
	held, _ := locker.Want(ctx, seat, time.Minute)
	fmt.Println("held, so marked:", held)

	if err := lease.Release(ctx); err != nil {
		panic(err)
	}
	for _, r := range lease.Wanted() {
		fmt.Println("tell whoever wanted", r)
		// ... once told, or once nobody is left to tell:
		_ = lease.ClearWanted(ctx, r)
	}
	// Output:
	// held, so marked: true
	// tell whoever wanted seat:A12
}
