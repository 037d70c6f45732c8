package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// enqueue -h lists the flags and variables enqueue reads, and none of the
// worker's others; enqueue neither takes those flags nor fails on those
// variables.
func TestEnqueue_OnlyItsOwnSettings(t *testing.T) {
	t.Parallel()
	run := func(env map[string]string, args ...string) (code int, stdout, stderr string) {
		var out, errOut bytes.Buffer
		c := &cli{ctx: t.Context(), stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
		return c.run(append([]string{"enqueue"}, args...)), out.String(), errOut.String()
	}

	code, help, _ := run(nil, "-h")
	require.Equal(t, exitOK, code)
	for _, want := range []string{"-json", "-task-id", "-unique", "-queue", "-redis-url", "-log-level", "-log-format", "TURNSTILE_REDIS_URL", "TRACEPARENT", "OTEL_TRACES_EXPORTER"} {
		require.Contains(t, help, want)
	}
	for _, worker := range []string{"-concurrency", "-lock-ttl", "-lock-wait", "-poll-interval", "-shutdown-timeout", "-admin-addr", "-admin-token", "-metrics-addr", "-queues", "-lock-urls", "TURNSTILE_CONCURRENCY"} {
		require.NotContains(t, help, worker+" ", "a worker setting in enqueue's help")
		require.NotContains(t, help, worker+"\n", "a worker setting in enqueue's help")
	}

	code, _, stderr := run(nil, "x:y", "-concurrency", "4")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "flag provided but not defined: -concurrency")

	// A worker variable enqueue does not read cannot fail it...
	code, _, stderr = run(map[string]string{"TURNSTILE_CONCURRENCY": "0"}, "x:y", "-json", "{}")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "set TURNSTILE_REDIS_URL")
	// ...one it reads can, named as the worker names it.
	code, _, stderr = run(map[string]string{"TURNSTILE_LOG_LEVEL": "loud"}, "x:y", "-json", "{}")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "TURNSTILE_LOG_LEVEL")
	code, _, stderr = run(nil, "x:y", "-log-format", "xml")
	require.Equal(t, exitUsage, code)
	require.Contains(t, stderr, "flag -log-format")
}
