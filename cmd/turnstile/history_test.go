package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/turnstilehq/turnstile/internal/history"
	"github.com/turnstilehq/turnstile/internal/redistest"
	"github.com/turnstilehq/turnstile/jobs"
	"github.com/turnstilehq/turnstile/jobs/ledger"
)

// checkHistory reads a history file and requires it linearizable, with
// accepted operations on a resource of each kind (the lock's name up to
// its first ':').
func checkHistory(t *testing.T, path string, kinds ...string) history.Result {
	t.Helper()
	records, err := history.ReadFiles(path)
	require.NoError(t, err)
	res, err := history.Check(records)
	require.NoError(t, err)
	require.True(t, res.OK(), res.String())
	accepted := map[string]int{}
	for _, rr := range res.Resources {
		kind, _, _ := strings.Cut(rr.Resource, ":")
		accepted[kind] += rr.Accepted
	}
	for _, k := range kinds {
		require.Positive(t, accepted[k], "no accepted operation on a %s lock in %s", k, res)
	}
	require.Zero(t, res.Totals().Unknown, "every operation returned")
	return res
}

func TestDemo_RecordsHistory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "history.jsonl")
	var stdout, stderr bytes.Buffer
	c := &cli{ctx: t.Context(), stdout: &stdout, stderr: &stderr, getenv: func(k string) string {
		return map[string]string{envHistoryFile: path}[k]
	}}
	code := c.run([]string{"demo", "-json", "-admin-addr=", "-orders", "120", "-seed", "3"})
	require.Equal(t, exitOK, code, "stderr:\n%s", &stderr)
	t.Log(checkHistory(t, path, "order", "ticket_type"))
}

// TestWorker_RecordsHistory runs "turnstile worker" serving the shop with
// TURNSTILE_HISTORY_FILE set, confirms a payment through it, and finds the
// job's fenced reads and commit in the file once the worker stopped.
func TestWorker_RecordsHistory(t *testing.T) {
	t.Parallel()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	store := ledger.New(rdb, "")
	require.NoError(t, store.AddTicketType(t.Context(), ledger.TicketType{ID: "gold", Capacity: 10, Price: 2500, Currency: "EUR"}))
	client := asynq.NewClientFromRedisClient(rdb)
	shop := &jobs.Service{Store: store, Client: client}
	order, err := shop.Reserve(t.Context(), "o-1", []ledger.Item{{TicketType: "gold", Quantity: 2}})
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "history.jsonl")
	env := map[string]string{
		"TURNSTILE_REDIS_URL": "redis://" + srv.Addr(), "TURNSTILE_POLL_INTERVAL": "10ms",
		"TURNSTILE_ADMIN_ADDR": freeAddr(t), envHistoryFile: path,
	}
	logs, stop := startShopWorker(t, env)
	task, err := jobs.NewTask(t.Context(), jobs.ConfirmArgs{OrderID: order.ID, WebhookID: "wh-1", Amount: order.Amount, Currency: "EUR"})
	require.NoError(t, err)
	_, err = client.EnqueueContext(t.Context(), task)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, err := store.Order(t.Context(), order.ID)
		return err == nil && o.State == ledger.StatePaid
	}, 30*time.Second, 20*time.Millisecond, "the payment was not confirmed; log:\n%s", logs)

	stop()
	require.Contains(t, logs.String(), "recording fenced ledger operations")
	t.Log(checkHistory(t, path, "order"))
}
