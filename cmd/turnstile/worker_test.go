package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
	"github.com/turnstilehq/turnstile/middleware"
	"github.com/turnstilehq/turnstile/worker"
)

// syncBuffer is a bytes.Buffer that a logger and a test can share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func itemType(handler asynq.HandlerFunc) worker.TaskType {
	return worker.TaskType{
		Type: "test:item", Handler: handler, Queue: "low", MaxRetry: 4, Timeout: 7 * time.Second,
		Keys: func(t *asynq.Task) ([]lock.Resource, error) {
			var p struct {
				Item string `json:"item"`
			}
			if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Item == "" {
				return nil, &middleware.PayloadError{Field: "item", Problem: "missing"}
			}
			return []lock.Resource{lock.Key("item", p.Item)}, nil
		},
	}
}

// A worker started by the command runs what the enqueue command enqueued,
// and stops with exit code 0 when its context ends (as on SIGTERM).
func TestWorkerAndEnqueue(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	adminAddr := freeAddr(t)
	const token = "test-admin-token-0123"
	env := map[string]string{
		"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL": "10ms",
		"TURNSTILE_ADMIN_ADDR": adminAddr, "TURNSTILE_ADMIN_TOKEN": token,
	}
	ran := make(chan string, 1)
	types := []worker.TaskType{itemType(func(_ context.Context, t *asynq.Task) error {
		ran <- string(t.Payload())
		return nil
	})}
	logs, stop := startWorkerCmd(t, env, types)
	enqueue := func(args ...string) (int, string, string) { return enqueueCmd(t, env, types, args...) }
	code, stdout, stderr := enqueue("test:item", "-json", `{"item":"a"}`, "-queue", "low", "-task-id", "item-a")
	require.Equal(t, exitOK, code, stderr)
	require.Equal(t, "item-a\n", stdout)
	select {
	case got := <-ran:
		require.JSONEq(t, `{"item":"a"}`, got)
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not run the task; its log:\n%s", logs.String())
	}

	// No worker serves "unserved": the first task stays there.
	code, _, stderr = enqueue("test:item", "-json", `{"item":"b"}`, "-queue", "unserved", "-task-id", "item-b")
	require.Equal(t, exitOK, code, stderr)
	code, _, stderr = enqueue("test:item", "-json", `{"item":"b"}`, "-queue", "unserved", "-task-id", "item-b")
	require.Equal(t, exitError, code, "a task ID is used once")
	require.Contains(t, stderr, "task ID")
	ti, err := asynq.NewInspectorFromRedisClient(srv.Client(t)).GetTaskInfo("unserved", "item-b")
	require.NoError(t, err)
	require.Equal(t, 4, ti.MaxRetry, "the type's retries")
	require.Equal(t, 7*time.Second, ti.Timeout, "the type's timeout")
	require.Contains(t, stderr, "task ID")
	code, _, stderr = enqueue("test:item", "-json", `{}`)
	require.Equal(t, exitError, code)
	require.Contains(t, stderr, "field item: missing")
	code, _, stderr = enqueue("test:nope", "-json", `{}`)
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "known types: test:item")

	// What a service in another language does: enqueue over HTTP, then see
	// the task done and no lock left.
	var apiAnswer string
	require.Eventually(t, func() bool {
		code, body := httpDo(t, http.MethodPost, "http://"+adminAddr+"/api/v1/tasks/test:item", token, `{"item":"http"}`)
		apiAnswer = body
		return code == http.StatusCreated
	}, 10*time.Second, 50*time.Millisecond, "the admin API did not enqueue: %s", apiAnswer)
	select {
	case got := <-ran:
		require.JSONEq(t, `{"item":"http"}`, got)
	case <-time.After(20 * time.Second):
		t.Fatalf("the worker did not run the task enqueued over HTTP; its log:\n%s", logs.String())
	}
	require.Eventually(t, func() bool {
		code, body := httpDo(t, http.MethodGet, "http://"+adminAddr+"/api/v1/locks", token, "")
		return code == http.StatusOK && strings.Contains(body, `"locks":[]`)
	}, 10*time.Second, 50*time.Millisecond, "a lock outlived its task")

	code, body := httpDo(t, http.MethodGet, "http://"+adminAddr+"/dashboard/api/queues", "", "")
	require.Equal(t, http.StatusUnauthorized, code, "with a token, the dashboard needs it: %s", body)

	stop()
	require.Contains(t, logs.String(), "worker starting")
}

// startWorkerCmd runs "turnstile worker" with env serving types. stop
// ends it as SIGTERM would and fails the test unless it exits with 0
// within 30 s.
func startWorkerCmd(t *testing.T, env map[string]string, types []worker.TaskType) (logs *syncBuffer, stop func()) {
	t.Helper()
	return startCLIWorker(t, env, types, worker.ProvideTaskTypes(func() []worker.TaskType { return types }))
}

// startShopWorker is startWorkerCmd for the shop's task types, as
// "turnstile worker" serves them.
func startShopWorker(t *testing.T, env map[string]string) (logs *syncBuffer, stop func()) {
	t.Helper()
	return startCLIWorker(t, env, taskTypes(), serveShop())
}

func startCLIWorker(t *testing.T, env map[string]string, types []worker.TaskType, serve fx.Option) (logs *syncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	logs = &syncBuffer{}
	exited := make(chan int, 1)
	go func() {
		c := &cli{ctx: ctx, stdout: logs, stderr: logs, getenv: func(k string) string { return env[k] }, taskTypes: types, serve: serve}
		exited <- c.run([]string{"worker"})
	}()
	return logs, func() {
		t.Helper()
		cancel()
		select {
		case code := <-exited:
			require.Equal(t, exitOK, code, logs.String())
		case <-time.After(30 * time.Second):
			t.Fatal("the worker did not stop")
		}
	}
}

// enqueueCmd runs "turnstile enqueue" with env and args.
func enqueueCmd(t *testing.T, env map[string]string, types []worker.TaskType, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{ctx: t.Context(), stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }, taskTypes: types}
	return c.run(append([]string{"enqueue"}, args...)), out.String(), errOut.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func httpDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
