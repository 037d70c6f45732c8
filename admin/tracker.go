package admin

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/turnstilehq/turnstile/lock"
)

// Tracker window: bucket by bucket, the last tracked minutes.
const (
	bucketSpan       = 10 * time.Second
	trackedBuckets   = 60 // ten minutes
	resourcesPerSpan = 1000
)

// A Tracker is a lock.Observer that keeps the last minutes of lock
// activity in memory for the locks page: contention and waits over time,
// the hottest resources, lost leases. Unlike metrics it may keep raw
// resource names: it never leaves the process but through the page.
type Tracker struct {
	now func() time.Time

	mu      sync.Mutex
	buckets [trackedBuckets]bucket
}

type bucket struct {
	start                           time.Time
	acquired, contended, busy, lost int
	waitSum                         time.Duration
	hot                             map[string]int // resource -> contended acquisitions
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker { return &Tracker{now: time.Now} }

// at returns the bucket for t, emptied if it held an older span.
func (t *Tracker) at(now time.Time) *bucket {
	start := now.Truncate(bucketSpan)
	b := &t.buckets[start.Unix()/int64(bucketSpan/time.Second)%trackedBuckets]
	if !b.start.Equal(start) {
		*b = bucket{start: start, hot: map[string]int{}}
	}
	return b
}

// Acquired implements lock.Observer.
func (t *Tracker) Acquired(_ context.Context, ev lock.AcquireEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.at(t.now())
	if ev.Err == nil {
		b.acquired++
		b.waitSum += ev.Wait
	} else if errors.Is(ev.Err, lock.ErrNotAcquired) {
		b.busy++
	}
	if ev.Contended.IsZero() {
		return
	}
	b.contended++
	for _, r := range ev.Resources {
		if _, ok := b.hot[r.String()]; ok || len(b.hot) < resourcesPerSpan {
			b.hot[r.String()]++
		}
	}
}

// Released implements lock.Observer.
func (t *Tracker) Released(context.Context, lock.ReleaseEvent) {}

// Lost implements lock.Observer.
func (t *Tracker) Lost(context.Context, lock.LostEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.at(t.now()).lost++
}

// A Point is one bucket of the activity chart.
type Point struct {
	Start     time.Time
	Contended int
	MeanWait  time.Duration
}

// A Hot resource was found held this often.
type Hot struct {
	Resource  string
	Contended int
}

// Activity is the tracked window: points oldest first (empty buckets
// included), the hottest resources, and totals.
type Activity struct {
	Points                []Point
	Hottest               []Hot
	Contended, Busy, Lost int
}

// Activity returns the last tracked minutes.
func (t *Tracker) Activity(top int) Activity {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now().Truncate(bucketSpan)
	var a Activity
	hot := map[string]int{}
	for i := trackedBuckets - 1; i >= 0; i-- {
		start := now.Add(-time.Duration(i) * bucketSpan)
		p := Point{Start: start}
		b := &t.buckets[start.Unix()/int64(bucketSpan/time.Second)%trackedBuckets]
		if b.start.Equal(start) {
			p.Contended = b.contended
			if b.acquired > 0 {
				p.MeanWait = b.waitSum / time.Duration(b.acquired)
			}
			a.Contended += b.contended
			a.Busy += b.busy
			a.Lost += b.lost
			for r, n := range b.hot {
				hot[r] += n
			}
		}
		a.Points = append(a.Points, p)
	}
	for r, n := range hot {
		a.Hottest = append(a.Hottest, Hot{r, n})
	}
	slices.SortFunc(a.Hottest, func(x, y Hot) int { return cmp.Or(y.Contended-x.Contended, cmp.Compare(x.Resource, y.Resource)) })
	a.Hottest = a.Hottest[:min(top, len(a.Hottest))]
	return a
}
