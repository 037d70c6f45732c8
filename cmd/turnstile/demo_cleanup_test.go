package main

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/redistest"
)

// sharedAsynqKey matches the keys a run may leave because they are not its
// own: asynq's list of queues and its per-queue counters of processed and
// failed tasks (totals, and per day, which asynq expires), shared with
// whatever else uses the queues.
var sharedAsynqKey = regexp.MustCompile(`^asynq:(queues|\{(critical|default|low)\}:(processed|failed)(:\d{4}-\d{2}-\d{2})?)$`)

func allKeys(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	keys, err := rdb.Keys(t.Context(), "*").Result()
	require.NoError(t, err)
	slices.Sort(keys)
	return keys
}

// Issue 16: the demo runs twice on one Redis, and each run removes every
// key and task it wrote, and nothing else: not the user's own keys, tasks
// or locks. Before, the second run met the first one's scheduled revokes
// (same task IDs for the hour-long payment window), and a run left
// thousands of keys behind.
func TestDemo_TwiceOnOneRedisLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	// The user's data: a key, a lock of a real worker with its fencing
	// counter, and a task scheduled in a queue the demo uses.
	require.NoError(t, rdb.Set(ctx, "user:data", "keep me", 0).Err())
	require.NoError(t, rdb.Set(ctx, "turnstile:lock:{order:o-0001}:fence", 41, 0).Err())
	_, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("payment:confirm", []byte(`{}`)),
		asynq.Queue("critical"), asynq.TaskID("confirm:o-0001-a"), asynq.ProcessIn(time.Hour))
	require.NoError(t, err)
	before := allKeys(t, rdb)

	url := "redis://" + srv.Addr()
	var runs []string
	for range 2 {
		code, s := runDemoJSON(t, "-orders", "120", "-seed", "3", "-redis-url", url)
		require.Equal(t, exitOK, code, "%+v", s.Violations)
		require.True(t, s.OK, "%+v", s.Violations)
		c := s.Cleanup
		require.False(t, c.Kept)
		require.Empty(t, c.Error)
		require.Positive(t, c.Keys, "the run wrote no key?")
		require.Positive(t, c.Tasks, "the run left no task (its scheduled revokes)?")
		runs = append(runs, c.RunID)
		t.Logf("run %s removed %d keys and %d tasks", c.RunID, c.Keys, c.Tasks)
	}
	require.NotEqual(t, runs[0], runs[1])

	after := allKeys(t, rdb)
	for _, k := range before {
		require.Contains(t, after, k, "the demo removed a key that was not its own")
	}
	var left []string
	for _, k := range after {
		if !slices.Contains(before, k) && !sharedAsynqKey.MatchString(k) {
			left = append(left, k)
		}
	}
	require.Empty(t, left, "keys the runs left behind")
	for _, run := range runs {
		for _, k := range after {
			require.NotContains(t, k, run, "a key of run %s is left", run)
		}
	}
	task, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo("critical", "confirm:o-0001-a")
	require.NoError(t, err, "the demo removed the user's task")
	require.Equal(t, asynq.TaskStateScheduled, task.State)
	fence, err := rdb.Get(ctx, "turnstile:lock:{order:o-0001}:fence").Int()
	require.NoError(t, err)
	require.Equal(t, 41, fence, "the demo touched a real worker's fencing counter")
}

// With -keep the run's keys and tasks stay, where the summary says.
func TestDemo_KeepLeavesTheRunsKeysAndTasks(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	code, s := runDemoJSON(t, "-orders", "60", "-seed", "4", "-redis-url", "redis://"+srv.Addr(), "-keep")
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	c := s.Cleanup
	require.True(t, c.Kept)
	require.Zero(t, c.Keys)
	require.Zero(t, c.Tasks)
	require.Len(t, c.Patterns, len(runPatterns(c.RunID)))
	for _, p := range c.Patterns[:2] { // the ledger's and the locks'; nothing need have been parked
		keys, err := rdb.Keys(t.Context(), p).Result()
		require.NoError(t, err)
		require.NotEmpty(t, keys, "no key matches %s", p)
	}
	scheduled, err := asynq.NewInspectorFromRedisClient(rdb).ListScheduledTasks("default", asynq.PageSize(1000))
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(scheduled, func(ti *asynq.TaskInfo) bool { return strings.Contains(ti.ID, c.RunID+"-") }),
		"no scheduled revoke of the run is left")
}

// The demo's own embedded Redis goes with it: nothing to remove, nothing
// said.
func TestDemo_EmbeddedSaysNothingOfCleanup(t *testing.T) {
	t.Parallel()
	code, s := runDemoJSON(t, "-orders", "30", "-seed", "2")
	require.Equal(t, exitOK, code, "%+v", s.Violations)
	require.True(t, s.Cleanup.Embedded)
	require.Zero(t, s.Cleanup.Keys)
	require.NotEmpty(t, s.Cleanup.RunID)
}

// With -serve the admin pages outlive the summary, and so do the run's
// keys and tasks, for the dashboard to show: they go when the pages stop,
// and the removal is reported then.
func TestDemo_ServeRemovesTheRunWhenThePagesStop(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	var stdout, stderr syncBuffer
	c := &cli{ctx: ctx, stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	args := []string{"demo", "-json", "-orders", "60", "-seed", "4", "-redis-url", "redis://" + srv.Addr(), "-admin-addr", freeAddr(t), "-serve"}
	done := make(chan int, 1)
	go func() { done <- c.run(args) }()
	require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "\n") }, time.Minute, 20*time.Millisecond, "no summary; stderr:\n%s", &stderr)
	var s demoSummary
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &s))
	require.True(t, s.OK, "%+v", s.Violations)
	require.True(t, s.Cleanup.AfterServe)
	run := s.Cleanup.RunID
	keys, err := rdb.Keys(t.Context(), demoPrefix(run)+"*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys, "the run's keys went while the pages are up")

	interrupt()
	require.Equal(t, exitOK, <-done, "stderr:\n%s", &stderr)
	require.Regexp(t, `cleanup: removed run `+run+`'s [1-9][0-9]* keys and [1-9][0-9]* tasks`, stderr.String())
	for _, k := range allKeys(t, rdb) {
		require.NotContains(t, k, run, "a key of the run is left")
	}
}
