package admin

import (
	_ "embed"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/turnstilehq/turnstile/middleware"
)

// pageLimit bounds the locks one page shows; the API pages further.
const pageLimit = 500

//go:embed locks.html
var locksHTML string

//go:embed locks.css
var locksCSS []byte

var locksPage = template.Must(template.New("locks").Parse(locksHTML))

type pageLock struct {
	Resource, TaskType, TaskID, Worker string
	Held, TTL                          string
	Fence                              int64
}

// htmlHeaders are the security headers of every HTML page: no script at
// all, styles from this server only, no framing, no referrer.
func htmlHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// locks is GET /locks/: the held locks, refreshing itself every few
// seconds without a script.
func (s *Server) locks(w http.ResponseWriter, r *http.Request) {
	var (
		rows   []pageLock
		cursor uint64
		more   bool
	)
	for {
		hs, next, err := s.deps.Locker.Holdings(r.Context(), cursor, 200)
		if err != nil {
			s.log.ErrorContext(r.Context(), "locks page", slog.Any("error", err))
			writeText(w, http.StatusServiceUnavailable, "cannot read the locks; retry later")
			return
		}
		for _, h := range hs {
			o := middleware.ParseOwner(h.Owner)
			held := ""
			if !o.Since.IsZero() {
				held = time.Since(o.Since).Round(time.Millisecond).String()
			}
			rows = append(rows, pageLock{
				Resource: h.Resource, TaskType: o.TaskType, TaskID: o.TaskID, Worker: o.Worker,
				Held: held, TTL: h.TTL.Round(time.Millisecond).String(), Fence: h.Fence,
			})
		}
		if cursor = next; cursor == 0 || len(rows) >= pageLimit {
			more = cursor != 0
			break
		}
	}
	data := struct {
		Locks    []pageLock
		More     bool
		At       string
		Activity *Activity
		Chart    *chart
	}{Locks: rows, More: more, At: time.Now().UTC().Format(time.TimeOnly)}
	if s.deps.Tracker != nil {
		a := s.deps.Tracker.Activity(10)
		data.Activity, data.Chart = &a, newChart(a.Points)
	}
	htmlHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	err := locksPage.Execute(w, data)
	if err != nil {
		s.log.WarnContext(r.Context(), "locks page", slog.Any("error", err))
	}
}

func (s *Server) locksStyle(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(locksCSS)
}

// chart is the activity chart, drawn as inline SVG: a bar per bucket for
// the contended acquisitions, a line for the mean wait, on a time axis of
// UTC clock times, with a count axis on the left and a wait axis, in
// units of time, on the right. Scales are rounded up to 1, 2 or 5 times a
// power of ten, so that tick labels are round numbers.
type chart struct {
	Width, Height int
	// Left, Right, Top and Bottom are the plot area's edges.
	Left, Right, Top, Bottom int
	Bars                     []bar
	Line                     string // polyline points
	MaxContended             int
	MaxWait                  string
	Bucket                   string // each bar's span, e.g. "10s"
	// TimeTicks run along the bottom (X, label), CountTicks up the left
	// and WaitTicks up the right (Y, label).
	TimeTicks, CountTicks, WaitTicks []tick
	// TickEnd, TimeLabelY, CountLabelX and WaitLabelX place the time
	// axis's tick marks and the tick labels.
	TickEnd, TimeLabelY, CountLabelX, WaitLabelX int
}

type bar struct {
	X, Y, W, H int
	Title      string
}

// tick is a labelled point on an axis: X on the time axis, Y on the
// others.
type tick struct {
	X, Y  int
	Label string
}

// Chart layout, in pixels.
const (
	chartWidth, chartHeight = 680, 190
	chartLeft, chartRight   = 44, 64 // margins for the count and wait labels
	chartTop, chartBottom   = 22, 30 // room for the axis titles, and for the time labels
	// timeTickEvery is the spacing of the time axis's labels.
	timeTickEvery = 2 * time.Minute
)

func newChart(points []Point) *chart {
	c := &chart{Width: chartWidth, Height: chartHeight, Top: chartTop, Left: chartLeft, Bottom: chartHeight - chartBottom, Bucket: bucketSpan.String()}
	step := (chartWidth - chartLeft - chartRight) / max(len(points), 1)
	c.Right = c.Left + step*len(points)
	c.TickEnd, c.TimeLabelY, c.CountLabelX, c.WaitLabelX = c.Bottom+4, c.Bottom+18, c.Left-6, c.Right+6
	plot := c.Bottom - c.Top
	maxContended, maxWait := 0, time.Duration(0)
	for _, p := range points {
		maxContended = max(maxContended, p.Contended)
		maxWait = max(maxWait, p.MeanWait)
	}
	c.MaxContended = int(niceCeil(int64(max(maxContended, 1))))
	scaleWait := time.Duration(niceCeil(int64(max(maxWait, time.Millisecond))))
	c.MaxWait = maxWait.Round(time.Microsecond).String()
	counts := []int{0, c.MaxContended}
	if c.MaxContended%2 == 0 {
		counts = []int{0, c.MaxContended / 2, c.MaxContended}
	}
	for _, v := range counts {
		c.CountTicks = append(c.CountTicks, tick{Y: c.Bottom - v*plot/c.MaxContended, Label: strconv.Itoa(v)})
	}
	for _, d := range []time.Duration{0, scaleWait / 2, scaleWait} {
		label := d.String()
		if d == 0 {
			label = "0"
		}
		c.WaitTicks = append(c.WaitTicks, tick{Y: c.Bottom - int(int64(plot)*int64(d)/int64(scaleWait)), Label: label})
	}
	var line []string
	for i, p := range points {
		x := c.Left + i*step
		if p.Start.Truncate(timeTickEvery).Equal(p.Start) {
			c.TimeTicks = append(c.TimeTicks, tick{X: x, Label: p.Start.UTC().Format("15:04")})
		}
		h := p.Contended * plot / c.MaxContended
		c.Bars = append(c.Bars, bar{
			X: x, Y: c.Bottom - h, W: max(step-1, 1), H: h,
			Title: p.Start.UTC().Format(time.TimeOnly) + " UTC, " + c.Bucket + ": " + strconv.Itoa(p.Contended) + " contended, mean wait " + p.MeanWait.Round(time.Microsecond).String(),
		})
		y := c.Bottom - int(int64(plot)*int64(p.MeanWait)/int64(scaleWait))
		line = append(line, strconv.Itoa(x+step/2)+","+strconv.Itoa(y))
	}
	c.Line = strings.Join(line, " ")
	return c
}

// niceCeil rounds v (positive) up to 1, 2 or 5 times a power of ten.
func niceCeil(v int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}
