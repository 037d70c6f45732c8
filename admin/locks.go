package admin

import (
	"cmp"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/telemetry"
)

// scopeName is this package's instrumentation scope.
const scopeName = "github.com/turnstilehq/turnstile/admin"

// lockJSON is a held lock in the API.
type lockJSON struct {
	Resource string  `json:"resource"`
	Owner    string  `json:"owner"`
	TaskType string  `json:"task_type,omitempty"`
	TaskID   string  `json:"task_id,omitempty"`
	Worker   string  `json:"worker,omitempty"`
	HeldMs   float64 `json:"held_ms,omitempty"`
	TTLms    float64 `json:"ttl_ms"`
	Fence    int64   `json:"fence"`
}

func toJSON(h lock.Holding) lockJSON {
	j := lockJSON{Resource: h.Resource, Owner: h.Owner, TTLms: ms(h.TTL), Fence: h.Fence}
	if o := middleware.ParseOwner(h.Owner); o.Worker != "" {
		j.TaskType, j.TaskID, j.Worker, j.HeldMs = o.TaskType, o.TaskID, o.Worker, ms(time.Since(o.Since))
	}
	return j
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// listLocks is GET /api/v1/locks?cursor=C&count=N: a page of held locks
// and the cursor of the next (0 at the end), read with SCAN.
func (s *Server) listLocks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursor, err := strconv.ParseUint(cmp.Or(q.Get("cursor"), "0"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "cursor: want the next_cursor of the previous page")
		return
	}
	count, err := strconv.ParseInt(cmp.Or(q.Get("count"), "100"), 10, 64)
	if err != nil || count < 1 || count > 1000 {
		writeError(w, http.StatusBadRequest, "count: want 1 to 1000")
		return
	}
	hs, next, err := s.deps.Locker.Holdings(r.Context(), cursor, count)
	if err != nil {
		s.log.ErrorContext(r.Context(), "list locks", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "list locks failed; retry later")
		return
	}
	locks := make([]lockJSON, 0, len(hs))
	for _, h := range hs {
		locks = append(locks, toJSON(h))
	}
	writeJSON(w, http.StatusOK, struct {
		Locks      []lockJSON `json:"locks"`
		NextCursor uint64     `json:"next_cursor,string"`
	}{locks, next})
}

// getLock is GET /api/v1/locks/{resource}.
func (s *Server) getLock(w http.ResponseWriter, r *http.Request) {
	h, err := s.deps.Locker.Holding(r.Context(), r.PathValue("resource"))
	switch {
	case errors.Is(err, lock.ErrNotHeld):
		writeError(w, http.StatusNotFound, "not held")
	case err != nil:
		s.log.ErrorContext(r.Context(), "read lock", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "read lock failed; retry later")
	default:
		writeJSON(w, http.StatusOK, toJSON(h))
	}
}

// forceRelease is DELETE /api/v1/locks/{resource}?fence=N&reason=...: it
// frees a resource whose holder is stuck, only if the holder's fence is
// still N, so that an operator never frees a newer holder by mistake. Who
// and why go to the log.
func (s *Server) forceRelease(w http.ResponseWriter, r *http.Request) {
	resource := r.PathValue("resource")
	fence, err := strconv.ParseInt(r.URL.Query().Get("fence"), 10, 64)
	if err != nil || fence < 1 {
		writeError(w, http.StatusBadRequest, "fence: want the holder's fencing token, as GET shows it")
		return
	}
	reason := r.URL.Query().Get("reason")
	if reason == "" {
		writeError(w, http.StatusBadRequest, "reason: say why the lock is forced")
		return
	}
	ctx, span := s.deps.TracerProvider.Tracer(scopeName).Start(r.Context(), "admin.force_release",
		trace.WithAttributes(telemetry.AttrLockResources.StringSlice([]string{resource}),
			telemetry.AttrLockFences.Int64Slice([]int64{fence}), attribute.String("turnstile.admin.reason", reason)))
	defer span.End()
	err = s.deps.Locker.ForceRelease(ctx, resource, fence)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	switch {
	case errors.Is(err, lock.ErrNotHeld):
		writeError(w, http.StatusNotFound, "not held")
	case errors.Is(err, lock.ErrFenceMismatch):
		writeError(w, http.StatusConflict, "a newer holder has the resource; nothing was released")
	case err != nil:
		s.log.ErrorContext(ctx, "force release", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "force release failed; retry later")
	default:
		s.log.WarnContext(ctx, "lock force-released by an operator", slog.String("resource", resource),
			slog.Int64("fence", fence), slog.String("reason", reason), slog.String("remote_addr", r.RemoteAddr))
		w.WriteHeader(http.StatusNoContent)
	}
}
