package admin_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/admin"
	"github.com/turnstilehq/turnstile/lock"
)

// basic is an Authorization header value carrying the token as the Basic
// auth password, as a browser sends it.
func basic(password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+password))
}

// readRoutes holds a lock and enqueues a task, and returns every read
// route with something to show.
func readRoutes(t *testing.T, f *fixture) []string {
	t.Helper()
	_, err := f.locker.Acquire(t.Context(), lock.Key("order", "o-read"))
	require.NoError(t, err)
	info, err := asynq.NewClientFromRedisClient(f.rdb).Enqueue(asynq.NewTask("test:note", []byte(`{"text":"x"}`)), asynq.Retention(time.Hour))
	require.NoError(t, err)
	return []string{
		"/api/v1/locks",
		"/api/v1/locks/order:o-read",
		"/api/v1/tasks/default/" + info.ID,
		"/locks/",
		"/dashboard/",
		"/dashboard/api/queues",
	}
}

// With a token configured, every read route needs it, as a bearer token
// or as the Basic auth password; health, readiness and metrics stay open.
func TestReads_NeedTheConfiguredToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token}, nil)
	for _, path := range readRoutes(t, f) {
		code, body := f.do(t, http.MethodGet, path, "", "")
		require.Equal(t, http.StatusUnauthorized, code, "GET %s without the token: %s", path, body)
		code, _ = f.do(t, http.MethodGet, path, "wrong", "")
		require.Equal(t, http.StatusUnauthorized, code, "GET %s with a wrong bearer token", path)
		code, _ = f.do(t, http.MethodGet, path, "", "", "Authorization", basic("wrong"))
		require.Equal(t, http.StatusUnauthorized, code, "GET %s with a wrong Basic password", path)
		code, body = f.do(t, http.MethodGet, path, token, "")
		require.Equal(t, http.StatusOK, code, "GET %s with the bearer token: %s", path, body)
		code, body = f.do(t, http.MethodGet, path, "", "", "Authorization", basic(token))
		require.Equal(t, http.StatusOK, code, "GET %s with the token as Basic password: %s", path, body)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.srv.URL+"/locks/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, resp.Header.Values("WWW-Authenticate"), `Basic realm="turnstile admin"`,
		"a browser asks for the token on the locks page as it does on the dashboard")
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/locks/style.css"} {
		code, _ := f.do(t, http.MethodGet, path, "", "")
		require.Equal(t, http.StatusOK, code, "GET %s stays open", path)
	}
}

// Without a token, reads answer on loopback as before, and changes stay
// refused.
func TestReads_OpenWithoutToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{}, nil)
	for _, path := range readRoutes(t, f) {
		code, body := f.do(t, http.MethodGet, path, "", "")
		require.Equal(t, http.StatusOK, code, "GET %s: %s", path, body)
	}
}

// asynqmon takes the token as the Basic auth password, which a browser
// caches and attaches to any request to the dashboard, also one a form on
// another site submits. A change from another origin is refused; the
// dashboard's own (same-origin) requests pass.
func TestDashboard_CrossSiteChangesRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token}, nil)
	_, err := asynq.NewClientFromRedisClient(f.rdb).Enqueue(asynq.NewTask("test:note", []byte(`{"text":"x"}`)))
	require.NoError(t, err)
	paused := func() bool {
		t.Helper()
		info, err := f.inspect.GetQueueInfo("default")
		require.NoError(t, err)
		return info.Paused
	}
	const pause = "/dashboard/api/queues/default:pause"
	auth := basic(token)

	for name, headers := range map[string][]string{
		"FetchMetadata":     {"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"},
		"SameSiteOtherPort": {"Sec-Fetch-Site", "same-site", "Origin", "http://127.0.0.1:1"},
		"OriginOnly":        {"Origin", "https://evil.example"},
	} {
		code, body := f.do(t, http.MethodPost, pause, "", "", append([]string{"Authorization", auth, "Content-Type", "application/x-www-form-urlencoded"}, headers...)...)
		require.Equal(t, http.StatusForbidden, code, "%s: a cross-origin POST with valid Basic credentials: %s", name, body)
		require.False(t, paused(), "%s: the queue was paused by a cross-origin request", name)
	}
	code, body := f.do(t, http.MethodDelete, "/dashboard/api/queues/default", "", "",
		"Authorization", auth, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
	require.Equal(t, http.StatusForbidden, code, "a cross-origin DELETE: %s", body)

	// What the dashboard's own fetch sends.
	code, body = f.do(t, http.MethodPost, pause, "", "",
		"Authorization", auth, "Sec-Fetch-Site", "same-origin", "Origin", f.srv.URL, "Accept", "application/json, text/plain, */*")
	require.Equal(t, http.StatusNoContent, code, "the dashboard's own button: %s", body)
	require.True(t, paused())

	// A client that is not a browser sends neither header: it needs the
	// token all the same, and nothing cached can stand in for it.
	code, _ = f.do(t, http.MethodPost, "/dashboard/api/queues/default:resume", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, body = f.do(t, http.MethodPost, "/dashboard/api/queues/default:resume", token, "")
	require.Equal(t, http.StatusNoContent, code, body)
	require.False(t, paused())
}

// The API's changes take the token only as a bearer token, which a
// browser never attaches by itself: cached Basic credentials do not
// enqueue.
func TestAPIChanges_RefuseBasicCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t, admin.Config{Token: token}, nil)
	code, body := f.do(t, http.MethodPost, "/api/v1/tasks/test:note", "", `{"text":"hi"}`, "Authorization", basic(token))
	require.Equal(t, http.StatusUnauthorized, code, body)
	var e struct{ Error string }
	require.NoError(t, json.Unmarshal([]byte(body), &e))
	require.NotEmpty(t, e.Error)
}
