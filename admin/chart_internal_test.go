package admin

import (
	"bytes"
	"context"
	"flag"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/worker"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the locks page's screenshot to docs/locks-page.png")

// Issue 16: the chart has a time axis (UTC clock times every two minutes)
// and units on both value axes, with round tick labels.
func TestChart_AxesAndUnits(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 1, 14, 30, 0, 0, time.UTC)
	var points []Point
	for i := range trackedBuckets {
		p := Point{Start: start.Add(time.Duration(i) * bucketSpan)}
		if i == 30 {
			p.Contended, p.MeanWait = 7, 7*time.Millisecond
		}
		points = append(points, p)
	}
	c := newChart(points)

	var labels []string
	for i, tk := range c.TimeTicks {
		labels = append(labels, tk.Label)
		require.True(t, tk.X >= c.Left && tk.X <= c.Right, "tick %s off the axis", tk.Label)
		if i > 0 {
			require.Greater(t, tk.X, c.TimeTicks[i-1].X)
		}
	}
	require.Equal(t, []string{"14:30", "14:32", "14:34", "14:36", "14:38"}, labels)
	require.Equal(t, 10, c.MaxContended, "7 rounds up to 10")
	require.Equal(t, []tick{{Y: c.Bottom, Label: "0"}, {Y: (c.Top + c.Bottom) / 2, Label: "5"}, {Y: c.Top, Label: "10"}}, c.CountTicks)
	require.Equal(t, []string{"0", "5ms", "10ms"}, []string{c.WaitTicks[0].Label, c.WaitTicks[1].Label, c.WaitTicks[2].Label})
	require.Equal(t, "7ms", c.MaxWait)
	peak := c.Bars[30]
	require.Equal(t, c.Bottom, peak.Y+peak.H, "bars stand on the time axis")
	require.Equal(t, c.Bottom-7*(c.Bottom-c.Top)/10, peak.Y)
	require.Contains(t, peak.Title, "14:35:00 UTC, 10s: 7 contended, mean wait 7ms")
	require.Len(t, strings.Fields(c.Line), trackedBuckets)
	require.LessOrEqual(t, c.Right+len("10ms")*7, c.Width, "room for the wait labels")

	// A quiet window still has its axes, in units.
	quiet := newChart(points[:1:1])
	require.Equal(t, []string{"0", "500µs", "1ms"}, []string{quiet.WaitTicks[0].Label, quiet.WaitTicks[1].Label, quiet.WaitTicks[2].Label})
	require.Equal(t, []tick{{Y: quiet.Bottom, Label: "0"}, {Y: quiet.Top, Label: "1"}}, quiet.CountTicks)
}

// The page draws the axes: tick labels, axis titles with units, a legend.
func TestLocksPage_ChartAxes(t *testing.T) {
	t.Parallel()
	tr := NewTracker()
	now := time.Date(2026, 12, 1, 14, 39, 55, 0, time.UTC)
	tr.now = func() time.Time { return now }
	a := tr.Activity(10)
	var b strings.Builder
	require.NoError(t, locksPage.Execute(&b, struct {
		Locks    []pageLock
		More     bool
		At       string
		Activity *Activity
		Chart    *chart
	}{At: "14:39:55", Activity: &a, Chart: newChart(a.Points)}))
	page := b.String()
	for _, want := range []string{">14:32<", ">14:38<", ">contended / 10s<", ">mean wait<", ">1ms<", "per 10s (count)", "Time axis: UTC"} {
		require.Contains(t, page, want)
	}
}

func TestNiceCeil(t *testing.T) {
	t.Parallel()
	for v, want := range map[int64]int64{1: 1, 2: 2, 3: 5, 5: 5, 6: 10, 11: 20, 21: 50, 51: 100, 7_000_000: 10_000_000} {
		require.Equal(t, want, niceCeil(v), "niceCeil(%d)", v)
	}
}

// The screenshot in the README (docs/locks-page.png) is today's page, as a
// browser draws it: four held locks and ten minutes of a ticket sale
// opening, replayed into the tracker on a clock that ends now. Regenerate
// it with
//
//	go test -run TestLocksPage_Screenshot ./admin/ -update-screenshot
//
// Without the flag the test still draws the page, into a temporary file.
// It needs Debian's chromium, as the browser tests do.
func TestLocksPage_Screenshot(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" || *updateScreenshot {
			t.Fatal("chromium is not installed (apt-get install chromium)")
		}
		t.Skip("chromium is not installed; apt-get install chromium to draw the page")
	}
	_, rdb := redistest.MiniClient(t)
	tr := NewTracker()
	locker, err := lock.New(rdb, lock.Config{TTL: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })

	end := time.Now()
	for _, h := range []struct {
		resource         lock.Resource
		kind, id, worker string
		held             time.Duration
	}{
		{lock.Key("order", "o-0017"), "payment:refund", "refund:o-0017-r2", "shop-2:4181", 1200 * time.Millisecond},
		{lock.Key("ticket_type", "gold", "inventory"), "payment:refund", "refund:o-0017-r2", "shop-2:4181", 1100 * time.Millisecond},
		{lock.Key("order", "o-0042"), "payment:confirm", "confirm:o-0042-a", "shop-1:3907", 340 * time.Millisecond},
		{lock.Key("order", "o-0108"), "order:revoke", "revoke:o-0108", "shop-1:3907", 85 * time.Millisecond},
	} {
		owner := middleware.Owner{TaskType: h.kind, TaskID: h.id, Worker: h.worker, Since: end.Add(-h.held)}
		held, err := locker.With(lock.Options{Owner: owner.String()})
		require.NoError(t, err)
		_, err = held.Acquire(t.Context(), h.resource)
		require.NoError(t, err)
	}

	// The sale opens about three minutes into the window: contention and
	// waits rise, a few tasks give up busy and park, one lease is lost.
	rng := rand.New(rand.NewPCG(16, 2026)) //nolint:gosec // G404: a reproducible picture.
	hot := []lock.Resource{
		lock.Key("ticket_type", "gold", "inventory"), lock.Key("ticket_type", "floor", "inventory"),
		lock.Key("ticket_type", "balcony", "inventory"), lock.Key("order", "o-0017"), lock.Key("order", "o-0042"),
	}
	for i := range trackedBuckets {
		at := end.Add(-time.Duration(trackedBuckets-1-i) * bucketSpan)
		tr.now = func() time.Time { return at }
		rush := math.Exp(-math.Pow(float64(i-26)/7, 2)) // 0 to 1, the sale's peak 4m20s in
		for range 20 + int(rush*180) {
			ev := lock.AcquireEvent{Resources: []lock.Resource{lock.Key("order", rng.IntN(5000))}, Wait: time.Duration(200+rng.IntN(800)) * time.Microsecond}
			if rng.Float64() < 0.02+rush*0.3 {
				ev.Resources = []lock.Resource{hot[min(rng.IntN(len(hot)), rng.IntN(len(hot)))]}
				ev.Contended = at
				ev.Wait = time.Duration(float64(2+rng.IntN(12))*(1+rush*4)) * time.Millisecond
				if rng.Float64() < rush*0.05 {
					ev.Err = &lock.BusyError{}
				}
			}
			tr.Acquired(t.Context(), ev)
		}
		if i == 31 {
			tr.Lost(t.Context(), lock.LostEvent{Resources: hot[:1], Err: lock.ErrNotHeld})
		}
	}
	tr.now = time.Now

	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), nil)
	require.NoError(t, err)
	s, err := New(Config{}, Deps{Locker: locker, Producer: producer, Tracker: tr})
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	shot := filepath.Join(t.TempDir(), "locks-page.png")
	if *updateScreenshot {
		shot = filepath.Join("..", "docs", "locks-page.png")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", //nolint:gosec // G204: bin is the chromium found on PATH, args are ours.
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--window-size=1080,870", "--screenshot="+shot, srv.URL+"/locks/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "chromium: %s", stderr.String())
	b, err := os.ReadFile(shot) //nolint:gosec // G304: the file the browser just wrote.
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("\x89PNG")), "not a PNG")
	t.Logf("the locks page: %s", shot)
}
