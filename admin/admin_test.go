package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "s3cret-admin-token"

type fixture struct {
	srv     *httptest.Server
	rdb     redis.UniversalClient
	locker  *lock.Locker
	inspect *asynq.Inspector
	logs    *bytes.Buffer
}

var noteType = worker.TaskType{
	Type: "test:note",
	Check: func(p []byte) error {
		var v struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(p, &v); err != nil || v.Text == "" {
			return &middleware.PayloadError{Field: "text", Problem: "missing"}
		}
		return nil
	},
}

func newFixture(t *testing.T, cfg admin.Config, ready func(context.Context) error) *fixture {
	t.Helper()
	mr, rdb := redistest.MiniClient(t)
	tracker := admin.NewTracker()
	locker, err := lock.New(rdb, lock.Config{TTL: time.Minute, Observer: tracker})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), nil, noteType)
	require.NoError(t, err)
	var logs bytes.Buffer
	s, err := admin.New(cfg, admin.Deps{
		Locker: locker, Producer: producer, Ready: ready, Dashboard: asynq.RedisClientOpt{Addr: mr.Addr()},
		Tracker: tracker, Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "turnstile_up 1\n") }),
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, s.Shutdown(context.Background())) // closes the dashboard's connections
	})
	return &fixture{srv: srv, rdb: rdb, locker: locker, inspect: asynq.NewInspectorFromRedisClient(rdb), logs: &logs}
}

func (f *fixture) do(t *testing.T, method, path, auth, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	var notReady error
	f := newFixture(t, admin.Config{}, func(context.Context) error { return notReady })
	code, _ := f.do(t, http.MethodGet, "/healthz", "", "")
	require.Equal(t, http.StatusOK, code)
	code, _ = f.do(t, http.MethodGet, "/readyz", "", "")
	require.Equal(t, http.StatusOK, code)
	notReady = errors.New("redis unreachable")
	code, body := f.do(t, http.MethodGet, "/readyz", "", "")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "redis unreachable")
	code, body = f.do(t, http.MethodGet, "/metrics", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "turnstile_up")
}

func TestLocks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token}, nil)
	owned, err := f.locker.With(lock.Options{TTL: time.Minute, Owner: "payment:refund/t-1"})
	require.NoError(t, err)
	var leases []*lock.Lease
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		l, err := owned.Acquire(t.Context(), lock.Key("order", id))
		require.NoError(t, err)
		leases = append(leases, l)
	}

	seen := map[string]bool{}
	cursor := "0"
	for range 100 {
		code, body := f.do(t, http.MethodGet, "/api/v1/locks?count=1&cursor="+cursor, token, "")
		require.Equal(t, http.StatusOK, code, body)
		var page struct {
			Locks []struct {
				Resource, Owner string
				Fence           int64
				TTL             float64 `json:"ttl_ms"`
			}
			NextCursor string `json:"next_cursor"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &page))
		for _, l := range page.Locks {
			seen[l.Resource] = true
			require.Equal(t, "payment:refund/t-1", l.Owner)
			require.Positive(t, l.Fence)
			require.Positive(t, l.TTL)
		}
		if cursor = page.NextCursor; cursor == "0" {
			break
		}
	}
	require.Equal(t, map[string]bool{"order:o-1": true, "order:o-2": true, "order:o-3": true}, seen)
	code, _ := f.do(t, http.MethodGet, "/api/v1/locks?count=0", token, "")
	require.Equal(t, http.StatusBadRequest, code)

	code, body := f.do(t, http.MethodGet, "/api/v1/locks/order:o-1", token, "")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, leases[0].Token(), "the token proves ownership: it must never leave the process")
	code, _ = f.do(t, http.MethodGet, "/api/v1/locks/order:nope", token, "")
	require.Equal(t, http.StatusNotFound, code)

	fence := leases[0].Fence(lock.Key("order", "o-1"))
	release := func(auth, query string) int {
		code, _ := f.do(t, http.MethodDelete, "/api/v1/locks/order:o-1"+query, auth, "")
		return code
	}
	require.Equal(t, http.StatusUnauthorized, release("", "?fence=1&reason=x"))
	require.Equal(t, http.StatusUnauthorized, release("wrong", "?fence=1&reason=x"))
	require.Equal(t, http.StatusBadRequest, release(token, "?reason=stuck"))
	require.Equal(t, http.StatusBadRequest, release(token, "?fence=1"))
	require.Equal(t, http.StatusConflict, release(token, "?fence=999999&reason=stuck"), "a fence that is not the holder's")
	require.Equal(t, http.StatusNoContent, release(token, "?reason=stuck+worker&fence="+strconv.FormatInt(fence, 10)))
	require.Equal(t, http.StatusNotFound, release(token, "?reason=again&fence="+strconv.FormatInt(fence, 10)))
	require.ErrorIs(t, leases[0].Release(t.Context()), lock.ErrNotHeld)
	require.Contains(t, f.logs.String(), "stuck worker", "who and why are logged")
}

func TestMutationsNeedAConfiguredToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{}, nil)
	code, _ := f.do(t, http.MethodPost, "/api/v1/tasks/test:note", "anything", `{"text":"hi"}`)
	require.Equal(t, http.StatusForbidden, code)
	code, _ = f.do(t, http.MethodDelete, "/api/v1/locks/order:o-1?fence=1&reason=x", "anything", "")
	require.Equal(t, http.StatusForbidden, code)
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token, MaxBody: 256, EnqueueRate: 1000}, nil)
	post := func(typ, auth, body string, header ...string) (int, string) {
		return f.do(t, http.MethodPost, "/api/v1/tasks/"+typ, auth, body, header...)
	}
	code, _ := post("test:note", "", `{"text":"hi"}`)
	require.Equal(t, http.StatusUnauthorized, code)
	code, body := post("test:nope", token, `{}`)
	require.Equal(t, http.StatusNotFound, code, body)
	code, body = post("test:note", token, `not json`)
	require.Equal(t, http.StatusBadRequest, code, body)
	code, body = post("test:note", token, `{"text":""}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.JSONEq(t, `{"error":"invalid payload","fields":{"text":"missing"}}`, body)
	code, _ = post("test:note", token, `{"text":"`+strings.Repeat("x", 300)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, code)

	code, body = post("test:note", token, `{"text":"card 4111 1111 1111 1111"}`)
	require.Equal(t, http.StatusCreated, code, body)
	var got struct {
		TaskID    string `json:"task_id"`
		Duplicate bool   `json:"duplicate"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	info, err := f.inspect.GetTaskInfo("default", got.TaskID)
	require.NoError(t, err)
	require.Equal(t, "test:note", info.Type)
	require.NotContains(t, f.logs.String(), "4111", "payloads never reach the log")
	code, body = f.do(t, http.MethodGet, "/api/v1/tasks/default/"+got.TaskID, token, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"state":"pending"`)
	require.NotContains(t, body, "4111", "the task API shows no payload")
	code, _ = f.do(t, http.MethodGet, "/api/v1/tasks/default/nope", token, "")
	require.Equal(t, http.StatusNotFound, code)

	code, body = post("test:note", token, `{"text":"once"}`, "Idempotency-Key", "req-42")
	require.Equal(t, http.StatusCreated, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	first := got.TaskID
	code, body = post("test:note", token, `{"text":"once"}`, "Idempotency-Key", "req-42")
	require.Equal(t, http.StatusOK, code, body)
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, first, got.TaskID)
	require.True(t, got.Duplicate)
}

func TestEnqueueRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token, EnqueueRate: 2}, nil)
	codes := map[int]int{}
	for range 5 {
		code, _ := f.do(t, http.MethodPost, "/api/v1/tasks/test:note", token, `{"text":"hi"}`)
		codes[code]++
	}
	require.Equal(t, 2, codes[http.StatusCreated])
	require.Equal(t, 3, codes[http.StatusTooManyRequests])
}

func TestNew_LogsWhatIsOpen(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	locker, err := lock.New(rdb, lock.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	producer, err := worker.NewProducer(asynq.NewClientFromRedisClient(rdb), nil)
	require.NoError(t, err)
	for addr, loud := range map[string]bool{"0.0.0.0:8090": true, "[::]:8090": true, "127.0.0.1:8090": false, "localhost:1": false, "[::1]:1": false} {
		var logs bytes.Buffer
		_, err := admin.New(admin.Config{Addr: addr}, admin.Deps{Locker: locker, Producer: producer, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		require.Equal(t, loud, strings.Contains(logs.String(), "level=WARN msg=\"ADMIN SERVER REACHABLE BEYOND LOOPBACK WITHOUT A TOKEN"), addr)
		// Loud or not, the log names exactly what answers without a token.
		require.Contains(t, logs.String(), "open=\"[/healthz /readyz /api/v1/openapi.json /locks/ /api/v1/locks]\"", addr)
		require.Contains(t, logs.String(), "changes are refused", addr)
	}
	var logs bytes.Buffer
	_, err = admin.New(admin.Config{Addr: "0.0.0.0:8090", Token: token}, admin.Deps{
		Locker: locker, Producer: producer, Metrics: http.NotFoundHandler(), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	require.NotContains(t, logs.String(), "WARN")
	require.Contains(t, logs.String(), "every route but these needs it")
	require.Contains(t, logs.String(), "open=\"[/healthz /readyz /metrics /api/v1/openapi.json]\"")
}

func TestLocksPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{}, nil)
	code, body := f.do(t, http.MethodGet, "/locks/", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "No lock is held")

	owned, err := f.locker.With(lock.Options{TTL: time.Minute, Owner: "payment:refund/t-<b>42</b>"})
	require.NoError(t, err)
	lease, err := owned.Acquire(t.Context(), lock.Key("order", "o-7"))
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/locks/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	body = string(b)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	require.Contains(t, body, "order:o-7")
	require.Contains(t, body, "payment:refund")
	require.Contains(t, body, "t-&lt;b&gt;42&lt;/b&gt;", "owners are escaped")
	require.NotContains(t, body, "<script", "the page runs no script")
	require.Contains(t, body, "<svg", "the activity chart")
	require.NotContains(t, body, lease.Token())
	guarded, err := f.locker.With(lock.Options{TTL: time.Minute, Owner: middleware.Owner{
		TaskType: "payment:confirm", TaskID: "confirm:wh-9", Worker: "host-b:7", Since: time.Now().Add(-1500 * time.Millisecond),
	}.String()})
	require.NoError(t, err)
	_, err = guarded.Acquire(t.Context(), lock.Key("order", "o-8"))
	require.NoError(t, err)
	_, body = f.do(t, http.MethodGet, "/locks/", "", "")
	require.Contains(t, body, "host-b:7", "the worker that holds it")
	require.Contains(t, body, "confirm:wh-9")
	require.Regexp(t, `>1\.[5-9]\d*s<`, body, "how long it has been held")
	code, css := f.do(t, http.MethodGet, "/locks/style.css", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, css, "table")
}

func TestDashboard(t *testing.T) {
	t.Parallel()
	open := newFixture(t, admin.Config{}, nil)
	_, err := asynq.NewClientFromRedisClient(open.rdb).Enqueue(asynq.NewTask("test:note", []byte(`{"text":"x"}`)))
	require.NoError(t, err)
	code, body := open.do(t, http.MethodGet, "/dashboard/", "", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<html")
	code, body = open.do(t, http.MethodGet, "/dashboard/api/queues", "", "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"default"`)
	code, _ = open.do(t, http.MethodPost, "/dashboard/api/queues/default:pause", "", "")
	require.GreaterOrEqual(t, code, 400, "without a token the dashboard is read-only")

	guarded := newFixture(t, admin.Config{Token: token}, nil)
	code, _ = guarded.do(t, http.MethodGet, "/dashboard/", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, guarded.srv.URL+"/dashboard/", nil)
	require.NoError(t, err)
	req.SetBasicAuth("ops", token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode, "a browser sends the token as the Basic auth password")
}
