package lock

import "context"

// Observers returns an Observer that tells each of obs, in order: for a
// Locker whose events feed both telemetry and, say, an operator's page.
func Observers(obs ...Observer) Observer { return observers(obs) }

type observers []Observer

func (os observers) Acquired(ctx context.Context, ev AcquireEvent) {
	for _, o := range os {
		o.Acquired(ctx, ev)
	}
}

func (os observers) Released(ctx context.Context, ev ReleaseEvent) {
	for _, o := range os {
		o.Released(ctx, ev)
	}
}

func (os observers) Lost(ctx context.Context, ev LostEvent) {
	for _, o := range os {
		o.Lost(ctx, ev)
	}
}
