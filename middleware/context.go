package middleware

import (
	"context"
	"sync"

	"github.com/turnstilehq/turnstile/lock"
)

type (
	leaseKey struct{}
	afterKey struct{}
)

// Lease returns the lease a guarded handler runs under, or nil. Pass its
// fencing token (Lease.Fence) with every store write.
func Lease(ctx context.Context) *lock.Lease {
	l, _ := ctx.Value(leaseKey{}).(*lock.Lease)
	return l
}

// AfterRelease registers fn to run once the guarded task's locks are
// released, whatever the handler returned: work such as notifications that
// needs no lock and should not hold one. fn gets a context detached from
// the task's cancellation. Outside a guarded handler, fn runs at once.
func AfterRelease(ctx context.Context, fn func(context.Context)) {
	a, _ := ctx.Value(afterKey{}).(*afterRelease)
	if a == nil {
		fn(context.WithoutCancel(ctx))
		return
	}
	a.mu.Lock()
	a.fns = append(a.fns, fn)
	a.mu.Unlock()
}

type afterRelease struct {
	mu  sync.Mutex
	fns []func(context.Context)
}

func (a *afterRelease) run(ctx context.Context) {
	a.mu.Lock()
	fns := a.fns
	a.fns = nil
	a.mu.Unlock()
	for _, fn := range fns {
		fn(ctx)
	}
}

// WithLease returns a copy of ctx that carries lease as Lease returns it:
// for tests, and for code that runs a guarded handler outside the worker.
func WithLease(ctx context.Context, lease *lock.Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, lease)
}
