package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

func TestNormalizeReason(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ kind, lastErr, want string }{
		{
			"payment:refund", "payment:refund: order k3x9qa2m-o-0012: refund of 6500 exceeds the 3250 paid and not yet refunded: skip retry for the task",
			"order <id>: refund of <n> exceeds the <n> paid and not yet refunded",
		},
		{
			"payment:refund", "payment:refund: order k3x9qa2m-o-0107 is revoked: only a paid order can be refunded: skip retry for the task",
			"order <id> is revoked: only a paid order can be refunded",
		},
		{
			"payment:confirm", "payment:confirm: order o-7 costs 7800 EUR, the webhook says 3900 EUR: skip retry for the task",
			"order <id> costs <n> EUR, the webhook says <n> EUR",
		},
		{
			"payment:refund", "payment:refund: order o-1 is busy; busy 12 times over 35s, giving up: skip retry for the task",
			"order <id> is busy; busy <n> times over <n>, giving up",
		},
		{"order:revoke", "", "(no error recorded)"},
	} {
		require.Equal(t, c.want, normalizeReason(c.kind, c.lastErr), c.lastErr)
	}
}

// Issue 16: the summary says why the run's tasks were archived, counted
// by reason, most frequent first, and only the run's. asynq archives them
// as it does in the demo, from a handler's error that skips retries.
func TestDemoLoad_ArchivedReasons(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.MiniClient(t)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Queues: map[string]int{"default": 1}, LogLevel: asynq.FatalLevel,
		Logger: nopLogger{},
	})
	require.NoError(t, srv.Start(asynq.HandlerFunc(func(_ context.Context, t *asynq.Task) error {
		return fmt.Errorf("%s: %s: %w", t.Type(), t.Payload(), asynq.SkipRetry)
	})))
	t.Cleanup(srv.Shutdown)
	client := asynq.NewClientFromRedisClient(rdb)
	const beyond = "order %s: refund of %d exceeds the %d paid and not yet refunded"
	for id, why := range map[string]string{
		"refund:r1-o-0001-r2": fmt.Sprintf(beyond, "r1-o-0001", 6500, 3250),
		"refund:r1-o-0002-r2": fmt.Sprintf(beyond, "r1-o-0002", 3900, 1950),
		"refund:r1-o-0003-r1": "order r1-o-0003 is revoked: only a paid order can be refunded",
		"refund:r2-o-0004-r2": fmt.Sprintf(beyond, "r2-o-0004", 100, 50), // another run's
	} {
		_, err := client.Enqueue(asynq.NewTask("payment:refund", []byte(why)), asynq.Queue("default"), asynq.TaskID(id))
		require.NoError(t, err)
	}
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		info, err := inspect.GetQueueInfo("default")
		return err == nil && info.Archived == 4
	}, 10*time.Second, 10*time.Millisecond)

	l := &demoLoad{inspect: inspect, runID: "r1"}
	got := l.archivedReasons(t.Context())
	require.Equal(t, []archivedReason{
		{Type: "payment:refund", Reason: "order <id>: refund of <n> exceeds the <n> paid and not yet refunded", Count: 2},
		{Type: "payment:refund", Reason: "order <id> is revoked: only a paid order can be refunded", Count: 1},
	}, got)
	var out bytes.Buffer
	printArchived(&out, got)
	require.Contains(t, out.String(), "3 tasks archived")
	require.Regexp(t, `2\s+payment:refund\s+order <id>: refund of <n> exceeds`, out.String())
}

// nopLogger keeps asynq's server quiet in tests.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}

// The demo's summary gives a reason for each archived task, the refunds
// beyond what was paid among them, in JSON and in the printed summary.
func TestDemo_SummarySaysWhyTasksWereArchived(t *testing.T) {
	t.Parallel()
	code, s := runDemoJSON(t, "-orders", "300", "-seed", "3")
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	archived, reasons := 0, 0
	for _, j := range s.Jobs {
		archived += j.Archived
	}
	for _, r := range s.Archived {
		reasons += r.Count
	}
	require.Positive(t, archived, "the workload archives no refund beyond the payment")
	require.Equal(t, archived, reasons, "%+v", s.Archived)
	require.True(t, slices.ContainsFunc(s.Archived, func(r archivedReason) bool {
		return r.Type == "payment:refund" && r.Reason == "order <id>: refund of <n> exceeds the <n> paid and not yet refunded"
	}), "%+v", s.Archived)

	var out bytes.Buffer
	s.print(&out)
	require.Contains(t, out.String(), fmt.Sprintf("%d tasks archived, not retried; by reason", archived))
	require.Regexp(t, `\n  \d+\s+payment:refund\s+order <id>: refund of <n> exceeds`, out.String())
}
