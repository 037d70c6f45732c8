package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring; "" means stdout must be empty
		wantStderr string // substring; "" means stderr must be empty
	}{
		{name: "NoArgsIsUsageError", args: nil, wantCode: exitUsage, wantStderr: "Commands:"},
		{name: "HelpFlag", args: []string{"--help"}, wantCode: exitOK, wantStdout: "demo"},
		{name: "ShortHelpFlag", args: []string{"-h"}, wantCode: exitOK, wantStdout: "Commands:"},
		{name: "HelpCommand", args: []string{"help"}, wantCode: exitOK, wantStdout: "demo"},
		{name: "UnknownCommand", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: `unknown command "frobnicate"`},
		{name: "UnknownFlag", args: []string{"--nope"}, wantCode: exitUsage, wantStderr: "flag provided but not defined"},
		{name: "DemoHelp", args: []string{"demo", "-h"}, wantCode: exitOK, wantStdout: "turnstile demo"},
		{name: "DemoExtraArgs", args: []string{"demo", "extra"}, wantCode: exitUsage, wantStderr: "unexpected arguments"},
		{name: "WorkerHelp", args: []string{"worker", "-h"}, wantCode: exitOK, wantStdout: "TURNSTILE_POLL_INTERVAL"},
		{name: "WorkerBadValue", args: []string{"worker", "-concurrency", "0"}, wantCode: exitUsage, wantStderr: "TURNSTILE_CONCURRENCY"},
		{name: "WorkerExtraArgs", args: []string{"worker", "extra"}, wantCode: exitUsage, wantStderr: "unexpected arguments"},
		{name: "AdminHelp", args: []string{"admin", "-h"}, wantCode: exitOK, wantStdout: "TURNSTILE_ADMIN_TOKEN"},
		{name: "AdminNeedsRedis", args: []string{"admin"}, wantCode: exitUsage, wantStderr: "TURNSTILE_REDIS_URL"},
		{name: "EnqueueHelp", args: []string{"enqueue", "-h"}, wantCode: exitOK, wantStdout: "-task-id"},
		{name: "EnqueueNoType", args: []string{"enqueue", "-json", "{}"}, wantCode: exitUsage, wantStderr: "want one task type"},
		{name: "EnqueueNeedsRedis", args: []string{"enqueue", "x:y", "-json", "{}"}, wantCode: exitUsage, wantStderr: "TURNSTILE_REDIS_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer

			c := &cli{ctx: t.Context(), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			code := c.run(tt.args)

			require.Equal(t, tt.wantCode, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
			requireOutput(t, "stdout", tt.wantStdout, stdout.String())
			requireOutput(t, "stderr", tt.wantStderr, stderr.String())
		})
	}
}

func TestUsage_ListsEveryCommand(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	usage(&buf)
	for _, c := range commands {
		require.Contains(t, buf.String(), c.name)
		require.Contains(t, buf.String(), c.summary)
	}
}

func requireOutput(t *testing.T, stream, want, got string) {
	t.Helper()
	if want == "" {
		require.Empty(t, got, "%s should be empty", stream)
		return
	}
	require.Contains(t, got, want, "%s", stream)
}
