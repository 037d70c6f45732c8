package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/lock"
)

// turnstile admin, alone against a Redis that a worker elsewhere uses,
// shows that worker's locks.
func TestAdminCommand(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	locker, err := lock.New(srv.Client(t), lock.Config{TTL: time.Minute})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locker.Close()) })
	owned, err := locker.With(lock.Options{TTL: time.Minute, Owner: "payment:refund/far-away"})
	require.NoError(t, err)
	_, err = owned.Acquire(t.Context(), lock.Key("order", "elsewhere"))
	require.NoError(t, err)

	addr := freeAddr(t)
	env := map[string]string{"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_ADMIN_ADDR": addr}
	ctx, stop := context.WithCancel(t.Context())
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		c := &cli{ctx: ctx, stdout: &logs, stderr: &logs, getenv: func(k string) string { return env[k] }}
		exited <- c.run([]string{"admin"})
	}()
	require.Eventually(t, func() bool {
		code, body := httpDo(t, http.MethodGet, "http://"+addr+"/locks/", "", "")
		return code == http.StatusOK && strings.Contains(body, "order:elsewhere") && strings.Contains(body, "far-away")
	}, 10*time.Second, 50*time.Millisecond, "the locks page did not show the lock; log:\n%s", &logs)
	code, _ := httpDo(t, http.MethodGet, "http://"+addr+"/readyz", "", "")
	require.Equal(t, http.StatusOK, code)
	stop()
	select {
	case code := <-exited:
		require.Equal(t, exitOK, code, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("turnstile admin did not stop")
	}
}

// turnstile admin with a token: the locks page needs it, health does not;
// and a Redis that may evict keys is named at start.
func TestAdminCommand_TokenAndEviction(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	require.NoError(t, srv.Client(t).ConfigSet(t.Context(), "maxmemory-policy", "allkeys-lru").Err())
	const token = "admin-cmd-token-0123456789" //nolint:gosec // G101: a test's own token for its own server.
	addr := freeAddr(t)
	env := map[string]string{
		"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_ADMIN_ADDR": addr, "TURNSTILE_ADMIN_TOKEN": token,
	}
	ctx, stop := context.WithCancel(t.Context())
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		c := &cli{ctx: ctx, stdout: &logs, stderr: &logs, getenv: func(k string) string { return env[k] }}
		exited <- c.run([]string{"admin"})
	}()
	require.Eventually(t, func() bool {
		code, _ := httpDo(t, http.MethodGet, "http://"+addr+"/healthz", "", "")
		return code == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "the admin server did not start; log:\n%s", &logs)
	code, _ := httpDo(t, http.MethodGet, "http://"+addr+"/locks/", "", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, body := httpDo(t, http.MethodGet, "http://"+addr+"/locks/", token, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, logs.String(), "REDIS MAY EVICT KEYS")
	require.Contains(t, logs.String(), "allkeys-lru")
	stop()
	select {
	case code := <-exited:
		require.Equal(t, exitOK, code, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("turnstile admin did not stop")
	}
}
