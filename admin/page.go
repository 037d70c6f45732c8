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
// the contended acquisitions, a line for the mean wait.
type chart struct {
	Width, Height int
	Bars          []bar
	Line          string // polyline points
	MaxContended  int
	MaxWait       string
}

type bar struct {
	X, Y, W, H int
	Title      string
}

func newChart(points []Point) *chart {
	const width, height = 600, 120
	c := &chart{Width: width, Height: height, MaxContended: 1}
	var maxWait time.Duration
	for _, p := range points {
		c.MaxContended = max(c.MaxContended, p.Contended)
		maxWait = max(maxWait, p.MeanWait)
	}
	c.MaxWait = maxWait.Round(time.Millisecond).String()
	step := width / max(len(points), 1)
	var line []string
	for i, p := range points {
		h := p.Contended * (height - 10) / c.MaxContended
		c.Bars = append(c.Bars, bar{
			X: i * step, Y: height - h, W: max(step-1, 1), H: h,
			Title: p.Start.UTC().Format(time.TimeOnly) + ": " + strconv.Itoa(p.Contended) + " contended, mean wait " + p.MeanWait.Round(time.Microsecond).String(),
		})
		y := height
		if maxWait > 0 {
			y = height - int(int64(height-10)*int64(p.MeanWait)/int64(maxWait))
		}
		line = append(line, strconv.Itoa(i*step+step/2)+","+strconv.Itoa(y))
	}
	c.Line = strings.Join(line, " ")
	return c
}
