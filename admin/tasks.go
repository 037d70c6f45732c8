package admin

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

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
// An Idempotency-Key header makes a retried request enqueue once: the task
// ID is derived from the type and the key (idempotentID), and a second
// request with them answers 200 with the same task, duplicate set, while
// the first task exists (an hour once done, see retention).
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
	// Kept an hour once done, so that GET /api/v1/tasks/{queue}/{id} can
	// tell the caller it completed.
	opts := []asynq.Option{asynq.Retention(retention)}
	key := r.Header.Get("Idempotency-Key")
	var id string
	if key != "" {
		id = idempotentID(typ, key)
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
		writeJSON(w, http.StatusOK, enqueued{TaskID: id, Queue: s.queueOf(typ), Duplicate: true})
	default:
		s.log.ErrorContext(r.Context(), "enqueue through the admin API", slog.String("task_type", typ), slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "enqueue failed; retry later")
	}
}

// idempotentID is the ID that an Idempotency-Key gives what a request
// creates in scope (a task type, orders): the same key, the same ID, and
// keys of one scope never meet another's. It is a valid task and order ID.
func idempotentID(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return "idem-" + hex.EncodeToString(sum[:12])
}

// queueOf is the queue the API enqueues tasks of typ on.
func (s *Server) queueOf(typ string) string {
	for _, tt := range s.deps.Producer.Types() {
		if tt.Type == typ {
			return cmp.Or(tt.Queue, worker.DefaultQueue)
		}
	}
	return ""
}

// retention is how long a task enqueued through the API is kept once done.
const retention = time.Hour

// taskJSON is a task's state in the API.
type taskJSON struct {
	TaskID      string     `json:"task_id"`
	Type        string     `json:"type"`
	Queue       string     `json:"queue"`
	State       string     `json:"state"`
	Retried     int        `json:"retried"`
	LastError   string     `json:"last_error,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// task is GET /api/v1/tasks/{queue}/{id}: where a task stands. Its
// payload is not shown: it may hold card data.
func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	info, err := s.deps.Inspector.GetTaskInfo(r.PathValue("queue"), r.PathValue("id"))
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		writeError(w, http.StatusNotFound, "no such task (a task done without retention is not kept)")
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "read task", slog.Any("error", err))
		writeError(w, http.StatusServiceUnavailable, "read task failed; retry later")
		return
	}
	t := taskJSON{TaskID: info.ID, Type: info.Type, Queue: info.Queue, State: info.State.String(), Retried: info.Retried, LastError: info.LastErr}
	if !info.CompletedAt.IsZero() {
		t.CompletedAt = &info.CompletedAt
	}
	writeJSON(w, http.StatusOK, t)
}
