package admin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/lock"
)

func TestTracker(t *testing.T) {
	t.Parallel()
	now := time.Unix(10_000, 0)
	tr := NewTracker()
	tr.now = func() time.Time { return now }
	ctx := context.Background()
	hot, warm := lock.Key("order", "hot"), lock.Key("order", "warm")
	for i := range 5 {
		tr.Acquired(ctx, lock.AcquireEvent{Resources: []lock.Resource{hot}, Wait: time.Duration(i) * time.Millisecond, Contended: now})
	}
	tr.Acquired(ctx, lock.AcquireEvent{Resources: []lock.Resource{warm}, Contended: now})
	tr.Acquired(ctx, lock.AcquireEvent{Resources: []lock.Resource{warm}, Contended: now, Err: &lock.BusyError{Resource: warm}})
	tr.Acquired(ctx, lock.AcquireEvent{Resources: []lock.Resource{lock.Key("order", "calm")}})
	tr.Lost(ctx, lock.LostEvent{Err: errors.New("gone")})

	a := tr.Activity(10)
	require.Len(t, a.Points, trackedBuckets)
	require.Equal(t, 7, a.Contended)
	require.Equal(t, 1, a.Busy)
	require.Equal(t, 1, a.Lost)
	require.Equal(t, []Hot{{"order:hot", 5}, {"order:warm", 2}}, a.Hottest)
	last := a.Points[len(a.Points)-1]
	require.Equal(t, 7, last.Contended)
	require.Equal(t, 10*time.Millisecond/7, last.MeanWait, "mean over the 7 acquired")

	now = now.Add(trackedBuckets * bucketSpan)
	a = tr.Activity(10)
	require.Zero(t, a.Contended, "ten minutes later the window is empty")
	require.Empty(t, a.Hottest)
}
