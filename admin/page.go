package admin

import (
	_ "embed"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// pageLimit bounds the locks one page shows; the API pages further.
const pageLimit = 500

//go:embed locks.html
var locksHTML string

//go:embed locks.css
var locksCSS []byte

var locksPage = template.Must(template.New("locks").Parse(locksHTML))

type pageLock struct {
	Resource, TaskType, TaskID string
	TTL                        string
	Fence                      int64
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
			typ, id, _ := strings.Cut(h.Owner, "/")
			rows = append(rows, pageLock{Resource: h.Resource, TaskType: typ, TaskID: id, TTL: h.TTL.Round(time.Millisecond).String(), Fence: h.Fence})
		}
		if cursor = next; cursor == 0 || len(rows) >= pageLimit {
			more = cursor != 0
			break
		}
	}
	htmlHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	err := locksPage.Execute(w, struct {
		Locks []pageLock
		More  bool
		At    string
	}{rows, more, time.Now().UTC().Format(time.TimeOnly)})
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
