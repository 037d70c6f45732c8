package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/hibiken/asynq"

	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/worker"
)

// enqueued is the body of a successful enqueue.
type enqueued struct {
	TaskID    string `json:"task_id"`
	Queue     string `json:"queue"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// enqueue is POST /api/v1/tasks/{type}: the body is the task's JSON payload.
// An Idempotency-Key header makes a retried request enqueue once: the key
// becomes the task ID, and a second request with it answers 200 with the
// same ID while the first task exists.
func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if !s.limiter.allow() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "enqueue rate exceeded; retry in a second")
		return
	}
	body, err := io.ReadAll(r.Body)
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds the limit")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	if !json.Valid(body) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the body must be the task's JSON payload", Fields: map[string]string{"(body)": "not JSON"}})
		return
	}
	var opts []asynq.Option
	key := r.Header.Get("Idempotency-Key")
	var id string
	if key != "" {
		sum := sha256.Sum256([]byte(typ + "\x00" + key))
		id = "idem-" + hex.EncodeToString(sum[:12])
		opts = append(opts, asynq.TaskID(id))
	}
	info, err := s.deps.Producer.Enqueue(r.Context(), typ, body, opts...)
	var perr *middleware.PayloadError
	switch {
	case err == nil:
		// The payload may hold card data: log the type and ID only.
		s.log.InfoContext(r.Context(), "task enqueued through the admin API", slog.String("task_type", typ), slog.String("task_id", info.ID))
		writeJSON(w, http.StatusCreated, enqueued{TaskID: info.ID, Queue: info.Queue})
	case errors.Is(err, worker.ErrUnknownType):
		writeError(w, http.StatusNotFound, "unknown task type "+typ)
	case errors.As(err, &perr):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid payload", Fields: map[string]string{perr.Field: perr.Problem}})
	case id != "" && errors.Is(err, asynq.ErrTaskIDConflict):
		writeJSON(w, http.StatusOK, enqueued{TaskID: id, Duplicate: true})
	default:
		s.log.ErrorContext(r.Context(), "enqueue through the admin API", slog.String("task_type", typ), slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "enqueue failed; retry later")
	}
}
